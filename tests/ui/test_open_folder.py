"""The 📂 button's folder opener: refused for a server others reach, and for a folder not made yet."""

from __future__ import annotations

import sys

import pytest

from modules import cmd_args, shared
from modules.ui import open_folder


@pytest.fixture
def restore_flags():
    yield
    shared.cmd_opts = cmd_args.defaults()


def test_missing_folder_and_remote_server_get_a_message(tmp_path, restore_flags):
    shared.cmd_opts = cmd_args.parse_args([])
    with pytest.raises(ValueError, match="does not exist yet"):
        open_folder.open_folder(tmp_path / "not-made")
    shared.cmd_opts = cmd_args.parse_args(["--listen"])
    assert not open_folder.available()
    with pytest.raises(ValueError, match="only offered when the server runs on this machine"):
        open_folder.open_folder(tmp_path)


@pytest.mark.skipif(sys.platform != "linux", reason="the Linux opener")
def test_linux_opener_is_xdg_open(tmp_path):
    assert open_folder.opener(tmp_path)[0] in ("xdg-open", "explorer.exe")
    assert open_folder.opener(tmp_path)[-1].endswith(tmp_path.name)
