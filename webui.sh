#!/usr/bin/env bash
# Easel one-click start for Linux and macOS.
#
#   ./webui.sh [flags]        e.g. ./webui.sh --listen --api
#
# Makes venv/ with python 3.10-3.12, installs torch (TORCH_COMMAND) and requirements.txt, then runs
# launch.py, which runs enabled extensions' install.py and serves the UI at http://127.0.0.1:7860.
# Later starts skip what is already installed. Your settings go in webui-user.sh.
#
# Running as root is refused (a web server with extensions should not have root's powers); pass -f,
# or set EASEL_ALLOW_ROOT=1 (containers, CI), to do it anyway.

cd "$(dirname "$0")" || exit 1

can_run_as_root=0
args=()
for arg in "$@"; do
    if [ "$arg" = "-f" ]; then
        can_run_as_root=1
    else
        args+=("$arg")
    fi
done

if [ -f webui-user.sh ]; then
    # shellcheck source=webui-user.sh
    source webui-user.sh
fi
export COMMANDLINE_ARGS="${COMMANDLINE_ARGS:-}"
if [ -n "${TORCH_COMMAND:-}" ]; then
    export TORCH_COMMAND
fi

if [ "$(id -u)" -eq 0 ] && [ "$can_run_as_root" -eq 0 ] && [ -z "${EASEL_ALLOW_ROOT:-}" ]; then
    echo "ERROR: This script must not be launched as root, aborting..." >&2
    echo "       (pass -f or set EASEL_ALLOW_ROOT=1 to run it as root anyway)" >&2
    exit 1
fi

# --skip-install / --skip-prepare-environment: keep venv/ as it is (it is still created when missing).
case " ${args[*]:-} $COMMANDLINE_ARGS " in
    *" --skip-install "* | *" --skip-prepare-environment "*) EASEL_SKIP_INSTALL=1 ;;
esac

# shellcheck source=tools/venv.sh
source tools/venv.sh
easel_prepare_venv

# A restart requested from the UI leaves tmp/restart behind: start again instead of exiting.
while true; do
    "$EASEL_PYTHON" -u launch.py ${args[@]+"${args[@]}"}
    status=$?
    if [ -f tmp/restart ]; then
        rm -f tmp/restart
        echo "Restarting..."
        continue
    fi
    exit "$status"
done
