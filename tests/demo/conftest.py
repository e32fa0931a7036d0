"""The demo-model tools live in `tools/demo`, imported as `tools.demo` from the repository root."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # plain `pytest` (not `python -m pytest`) leaves the root off the path
    sys.path.insert(0, str(ROOT))
