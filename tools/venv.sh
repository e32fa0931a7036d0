# Shared by webui.sh and run_tests.sh: find a suitable python3, make venv/ and install what Easel
# needs. Later runs skip the installs when nothing changed (a stamp file records the inputs).
#
# Inputs (all optional): python_cmd, venv_dir ("-" = no virtual environment), TORCH_COMMAND,
# EASEL_SKIP_INSTALL (create the venv but install nothing), EASEL_REINSTALL (install again).
# Output: EASEL_PYTHON, the interpreter to run Easel with.

EASEL_DEFAULT_TORCH_COMMAND="pip install torch==2.13.0"  # keep equal to launch_utils.DEFAULT_TORCH_COMMAND

easel_find_python() {
    local candidates=("${python_cmd:-}" python3.11 python3.12 python3.10 python3)
    local c
    for c in "${candidates[@]}"; do
        [ -n "$c" ] || continue
        command -v "$c" >/dev/null 2>&1 || continue
        if "$c" -c 'import sys; sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 12) else 1)' 2>/dev/null; then
            echo "$c"
            return 0
        fi
    done
    echo "Easel needs Python 3.10, 3.11 or 3.12; none was found on PATH (set python_cmd in webui-user.sh)." >&2
    return 1
}

easel_prepare_venv() {
    local venv_dir="${venv_dir:-venv}"
    local stamp
    if [ "$venv_dir" = "-" ]; then
        # No virtual environment: install into (and run) the chosen python itself.
        EASEL_PYTHON="$(command -v "$(easel_find_python)")" || exit 1
        mkdir -p tmp  # gitignored
        stamp="tmp/.easel-installed-system"
    else
        case "$venv_dir" in
            /*) ;;
            *) venv_dir="$(pwd)/$venv_dir" ;;
        esac
        if [ ! -x "$venv_dir/bin/python" ]; then
            local py
            py=$(easel_find_python) || exit 1
            echo "Creating virtual environment in $venv_dir with $("$py" --version 2>&1)"
            "$py" -m venv "$venv_dir" || exit 1
        fi
        EASEL_PYTHON="$venv_dir/bin/python"
        stamp="$venv_dir/.easel-installed"
    fi
    export EASEL_PYTHON

    if [ -n "${EASEL_SKIP_INSTALL:-}" ]; then
        return 0
    fi
    local torch_command="${TORCH_COMMAND:-$EASEL_DEFAULT_TORCH_COMMAND}"
    local want
    want="$(cat requirements.txt; echo "$torch_command")"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -z "${EASEL_REINSTALL:-}" ]; then
        return 0
    fi
    if ! "$EASEL_PYTHON" -c 'import torch' >/dev/null 2>&1 || [ -n "${EASEL_REINSTALL:-}" ]; then
        echo "Installing torch: $torch_command"
        # shellcheck disable=SC2086
        "$EASEL_PYTHON" -m $torch_command || exit 1
    fi
    echo "Installing requirements"
    "$EASEL_PYTHON" -m pip install -q -r requirements.txt || exit 1
    printf '%s' "$want" > "$stamp"
}
