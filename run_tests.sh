#!/usr/bin/env bash
# Set up everything the test suite needs (venv/, torch, requirements, test tools) and run it.
# Usage: ./run_tests.sh [pytest arguments]      e.g. ./run_tests.sh -m "not slow"
set -euo pipefail
cd "$(dirname "$0")"

# shellcheck source=tools/venv.sh
source tools/venv.sh
easel_prepare_venv
"$EASEL_PYTHON" -m pip install -q -r requirements-test.txt

# HF_HUB_OFFLINE is set in-process too; setting it here also covers the test tools themselves.
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
exec "$EASEL_PYTHON" -m pytest "$@"
