# Shared by webui.sh and run_tests.sh: find a suitable python3, make venv/ and install what Easel
# needs. Later runs skip the installs when nothing changed (a stamp file records the inputs).

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
    if [ ! -x "$venv_dir/bin/python" ]; then
        local py
        py=$(easel_find_python) || exit 1
        echo "Creating virtual environment in $venv_dir with $("$py" --version 2>&1)"
        "$py" -m venv "$venv_dir"
    fi
    EASEL_PYTHON="$(pwd)/$venv_dir/bin/python"
    export EASEL_PYTHON

    local torch_command="${TORCH_COMMAND:-pip install torch==2.13.0}"
    local stamp="$venv_dir/.easel-installed"
    local want
    want="$(cat requirements.txt; echo "$torch_command")"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -z "${EASEL_REINSTALL:-}" ]; then
        return 0
    fi
    if ! "$EASEL_PYTHON" -c 'import torch' >/dev/null 2>&1 || [ -n "${EASEL_REINSTALL:-}" ]; then
        echo "Installing torch: $torch_command"
        # shellcheck disable=SC2086
        "$EASEL_PYTHON" -m $torch_command
    fi
    echo "Installing requirements"
    "$EASEL_PYTHON" -m pip install -q -r requirements.txt
    printf '%s' "$want" > "$stamp"
}
