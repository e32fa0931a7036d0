"""Easel's launcher: prepare the environment, then start the server (webui.py).

`webui.sh` / `webui.bat` run this inside venv/. Preparation installs torch when it is missing
(TORCH_COMMAND), requirements.txt when it is not satisfied and runs each enabled extension's
install.py; --skip-install skips the last two, --skip-prepare-environment all of it, and --exit stops
after it.

Extensions' install.py scripts `import launch` for A1111's helpers; they are re-exported here, and
importing this module does nothing else.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import modules  # noqa: F401  (offline environment first)
from modules import cmd_args, launch_utils
from modules.launch_utils import (  # noqa: F401  (the helper names install.py scripts use)
    check_run_python,
    commit_hash,
    dir_repos,
    git,
    git_clone,
    git_tag,
    index_url,
    is_installed,
    list_extensions,
    prepare_environment,
    python,
    repo_dir,
    run,
    run_extension_installer,
    run_git,
    run_pip,
)


def __getattr__(name: str) -> Any:
    # `launch.args`, parsed on first use (see launch_utils.get_args).
    if name == "args":
        return launch_utils.get_args()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv: list[str] | None = None) -> int:
    started_at = time.monotonic()
    from modules import script_loading

    full_argv = cmd_args.split_env_args(sys.argv[1:] if argv is None else argv)
    # Extensions' preload.py add their flags before the command line is parsed.
    args = script_loading.parser_with_extensions(full_argv).parse_args(full_argv)

    import webui

    webui.check_args(args)  # refuse before spending minutes on installs
    if not args.skip_prepare_environment:
        report = prepare_environment(args, full_argv)
        failed = report.failed_installers
        from modules import extensions

        extensions.record_installer_results(failed)  # shown in the Extensions tab
        if failed:
            names = ", ".join(r.extension for r in failed)
            print(f"install.py failed for: {names} (see above); continuing", file=sys.stderr, flush=True)
    if args.exit:
        print("Exiting because of --exit argument", flush=True)
        return 0
    return webui.start(args, started_at=started_at)


if __name__ == "__main__":
    sys.exit(main())
