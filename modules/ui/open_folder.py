"""The 📂 button under the gallery: the tab's output folder in the desktop's file manager.

It opens the folder on the machine the server runs on, so the page shows the button only when
the server is reachable from this machine alone (no --listen, --share or --server-name).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

from modules import cmd_args, shared


def available() -> bool:
    return not cmd_args.is_non_local(shared.cmd_opts)


def opener(folder: Path) -> list[str]:
    """The command that shows `folder` in this system's file manager."""
    if sys.platform == "darwin":
        return ["open", str(folder)]
    if "microsoft-standard" in platform.uname().release.lower():  # WSL: the Windows explorer
        return ["explorer.exe", subprocess.run(["wslpath", "-w", str(folder)], capture_output=True, text=True,
                                               check=True).stdout.strip()]
    return ["xdg-open", str(folder)]


def open_folder(folder: Path) -> None:
    """Show `folder`; raises ValueError with a message for the page when it can't."""
    if not available():
        raise ValueError("Opening folders is only offered when the server runs on this machine.")
    if not folder.is_dir():
        raise ValueError(f'Folder "{folder}" does not exist yet; it is made when the first picture is saved.')
    try:
        if sys.platform == "win32":
            os.startfile(folder)  # type: ignore[attr-defined]  # Windows only
        else:
            subprocess.Popen(opener(folder), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    except (OSError, subprocess.CalledProcessError) as e:
        raise ValueError(f'Could not open "{folder}": {e}') from e
