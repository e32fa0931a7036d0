#!/usr/bin/env bash
# Set up everything the test suite needs (venv/, torch, requirements, test tools) and run it.
# Usage: ./run_tests.sh [pytest arguments]      e.g. ./run_tests.sh -m "not slow"
# venv/ is made exactly as webui.sh makes it (tools/venv.sh); the exit status is pytest's
# (5 when no test was collected).
set -euo pipefail
cd "$(dirname "$0")"

# shellcheck source=tools/venv.sh
source tools/venv.sh
easel_prepare_venv

# Test tools: pip runs only when requirements-test.txt is not already satisfied.
if ! "$EASEL_PYTHON" -c 'import sys; from pathlib import Path; from modules.launch_utils import requirements_met; sys.exit(0 if requirements_met(Path("requirements-test.txt")) else 1)' 2>/dev/null; then
    echo "Installing test requirements"
    "$EASEL_PYTHON" -m pip install -q -r requirements-test.txt
fi

# HF_HUB_OFFLINE is set in-process too; setting it here also covers the test tools themselves.
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
exec "$EASEL_PYTHON" -m pytest "$@"
