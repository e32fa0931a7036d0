"""Fixtures of the page-building tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from modules import cmd_args, shared


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[Path]:
    """Easel initialised over an empty data folder (`tmp_path`); put back to defaults afterwards."""
    args = cmd_args.parse_args(["--data-dir", str(tmp_path), "--models-dir", str(tmp_path / "models")])
    shared.initialize(args)
    yield tmp_path
    shared.initialize(cmd_args.defaults(), load_settings=False)
