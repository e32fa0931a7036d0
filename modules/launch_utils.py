"""Preparing the Python environment before the server starts: torch, requirements, extension installers.

`launch.py` calls `prepare_environment()`; the same module also provides the helpers A1111's `launch`
module gives to extensions' `install.py` scripts (`is_installed`, `run_pip`, `run`, `git`, `python`,
`index_url`, ...), so those scripts run unchanged. It must stay light: it is imported by every
`install.py` subprocess and before torch is known to be installed, so it imports nothing heavy.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import logging
import os
import shlex
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modules import cmd_args
from modules.paths import script_path

log = logging.getLogger(__name__)

python: str = sys.executable
"""The interpreter of the environment being prepared (the venv's)."""
git: str = os.environ.get("GIT", "git")
index_url: str = os.environ.get("INDEX_URL", "")
"""Extra `--index-url` for pip, as A1111's INDEX_URL."""
dir_repos: str = "repositories"
default_command_live: bool = os.environ.get("WEBUI_LAUNCH_LIVE_OUTPUT") == "1"

DEFAULT_TORCH_COMMAND = "pip install torch==2.13.0"
"""PyPI's default build suits the machine: CUDA on Linux x86-64, MPS-capable on macOS, CPU elsewhere.
torchvision is deliberately absent (docs/decisions.md)."""

REQUIREMENTS_FILE = script_path / "requirements.txt"

_args: argparse.Namespace | None = None
_argv: list[str] | None = None


def set_args(args: argparse.Namespace, argv: list[str] | None = None) -> None:
    """Make the launcher's parsed flags the ones `run_pip` sees; `argv` (the flags as given, with
    COMMANDLINE_ARGS already merged in) is what extension installers will parse."""
    global _args, _argv
    _args = args
    _argv = list(argv) if argv is not None else None


def get_args() -> argparse.Namespace:
    """The flags of this process. In an `install.py` subprocess they come from COMMANDLINE_ARGS (the
    launcher exports its own flags there), parsed leniently: an installer must not die on a flag
    that an extension's preload.py added."""
    global _args
    if _args is None:
        _args, _unknown = cmd_args.build_parser().parse_known_args(cmd_args.split_env_args([]))
    return _args


def __getattr__(name: str) -> Any:
    # `launch.args` in A1111 is the parsed namespace; computed on first use, not at import.
    if name == "args":
        return get_args()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- helpers offered to extensions (A1111's launch module names) ------------------------------------

def run(command: str | list[str], desc: str | None = None, errdesc: str | None = None,
        custom_env: Mapping[str, str] | None = None, live: bool = default_command_live) -> str:
    """Run a shell command (a string, as A1111's scripts pass) or an argv list; return its output.

    Raises RuntimeError with the command, exit code and output when it fails, so callers (and the
    extension installer report) can say what went wrong.
    """
    if desc:
        print(desc, flush=True)
    shell = isinstance(command, str)
    env = dict(custom_env) if custom_env is not None else os.environ.copy()
    if live:
        result = subprocess.run(command, shell=shell, env=env, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{errdesc or 'Error running command'}.\nCommand: {command}\n"
                               f"Error code: {result.returncode}")
        return ""
    result = subprocess.run(command, shell=shell, env=env, check=False, capture_output=True, text=True,
                            encoding="utf8", errors="replace")
    if result.returncode != 0:
        parts = [f"{errdesc or 'Error running command'}.", f"Command: {command}", f"Error code: {result.returncode}"]
        if result.stdout:
            parts.append(f"stdout: {result.stdout.rstrip()}")
        if result.stderr:
            parts.append(f"stderr: {result.stderr.rstrip()}")
        raise RuntimeError("\n".join(parts))
    return result.stdout or ""


def is_installed(package: str) -> bool:
    """True when a distribution (pip name) or an importable top-level module of that name exists."""
    try:
        importlib.metadata.distribution(package)
        return True
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        return importlib.util.find_spec(package) is not None
    except (ModuleNotFoundError, ValueError):
        return False


def run_pip(command: str, desc: str | None = None, live: bool = default_command_live) -> str | None:
    """`python -m pip <command>`; does nothing under --skip-install, as A1111's does."""
    if getattr(get_args(), "skip_install", False):
        return None
    index = f" --index-url {index_url}" if index_url else ""
    return run(f'"{python}" -m pip {command} --prefer-binary{index}', desc=f"Installing {desc}",
               errdesc=f"Couldn't install {desc}", live=live)


def check_run_python(code: str) -> bool:
    """True when `python -c code` exits 0."""
    result = subprocess.run([python, "-c", code], capture_output=True, check=False)
    return result.returncode == 0


def repo_dir(name: str) -> str:
    return str(script_path / dir_repos / name)


def run_git(dir: str, name: str, command: str, desc: str | None = None, errdesc: str | None = None,
            custom_env: Mapping[str, str] | None = None, live: bool = default_command_live) -> str:
    return run(f'"{git}" -C "{dir}" {command}', desc=desc, errdesc=errdesc or f"Couldn't run git for {name}",
               custom_env=custom_env, live=live)


def git_clone(url: str, dir: str, name: str, commithash: str | None = None) -> None:
    """Clone `url` into `dir` (or fetch and check out `commithash` when it is already there)."""
    if os.path.exists(os.path.join(dir, ".git")):
        if commithash is None:
            return
        current = run_git(dir, name, "rev-parse HEAD", errdesc=f"Couldn't determine {name}'s hash").strip()
        if current == commithash:
            return
        run_git(dir, name, "fetch", f"Fetching updates for {name}...", f"Couldn't fetch {name}", live=True)
        run_git(dir, name, f"checkout {commithash}", f"Checking out commit for {name}...",
                f"Couldn't checkout commit {commithash} for {name}", live=True)
        return
    run(f'"{git}" clone "{url}" "{dir}"', f"Cloning {name} into {dir}...", f"Couldn't clone {name}", live=True)
    if commithash is not None:
        run(f'"{git}" -C "{dir}" checkout {commithash}', None, f"Couldn't checkout {name}'s hash: {commithash}")


def commit_hash() -> str:
    """The repository's HEAD commit, or "<none>" outside a git checkout."""
    try:
        return subprocess.check_output([git, "-C", str(script_path), "rev-parse", "HEAD"],
                                       stderr=subprocess.DEVNULL, text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return "<none>"


def git_tag() -> str:
    try:
        return subprocess.check_output([git, "-C", str(script_path), "describe", "--tags"],
                                       stderr=subprocess.DEVNULL, text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return "<none>"


# --- requirements ------------------------------------------------------------------------------------

def _requirement_lines(path: Path) -> Iterable[str]:
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            yield line


def requirements_met(path: Path = REQUIREMENTS_FILE) -> bool:
    """True when every requirement in the file is installed at an allowed version.

    Checked in-process from package metadata (milliseconds), so later starts skip pip entirely.
    Anything it cannot judge counts as unmet and pip decides.
    """
    try:
        from packaging.requirements import InvalidRequirement, Requirement
    except ImportError:
        return False
    for line in _requirement_lines(path):
        try:
            req = Requirement(line)
        except InvalidRequirement:
            return False
        if req.marker is not None and not req.marker.evaluate():
            continue
        try:
            version = importlib.metadata.version(req.name)
        except importlib.metadata.PackageNotFoundError:
            return False
        if req.specifier and not req.specifier.contains(version, prereleases=True):
            return False
    return True


# --- extensions ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ExtensionDir:
    """An extension folder found on disk."""

    name: str
    path: Path
    is_builtin: bool


@dataclass
class InstallerResult:
    """What running one extension's install.py gave."""

    extension: str
    ok: bool
    output: str = ""
    error: str = ""


def read_settings(config_file: Path) -> dict[str, Any]:
    """config.json as a dict; a missing or unreadable file is an empty one (with a warning)."""
    try:
        data = json.loads(config_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        log.warning("could not read %s: %s", config_file, e)
        return {}
    return data if isinstance(data, dict) else {}


def list_extensions(extensions_dir: Path, builtin_dir: Path, settings: Mapping[str, Any],
                    args: argparse.Namespace) -> list[ExtensionDir]:
    """Enabled extensions, built-in first, each folder sorted by name, as A1111 orders them.

    Disabled are those named in the `disabled_extensions` setting, and whole groups through the
    `disable_all_extensions` setting ("extra"/"all") or --disable-extra-extensions /
    --disable-all-extensions.
    """
    mode = str(settings.get("disable_all_extensions", "none"))
    if getattr(args, "disable_all_extensions", False):
        mode = "all"
    elif getattr(args, "disable_extra_extensions", False) and mode != "all":
        mode = "extra"
    if mode == "all":
        return []
    disabled = set(settings.get("disabled_extensions") or [])
    found: list[ExtensionDir] = []
    groups = [(builtin_dir, True)] + ([] if mode == "extra" else [(extensions_dir, False)])
    for folder, builtin in groups:
        if not folder.is_dir():
            continue
        for entry in sorted(folder.iterdir(), key=lambda p: p.name):
            if entry.is_dir() and not entry.name.startswith(".") and entry.name not in disabled:
                found.append(ExtensionDir(entry.name, entry, builtin))
    return found


def run_extension_installer(extension: ExtensionDir) -> InstallerResult | None:
    """Run `<extension>/install.py` in a subprocess; None when the extension has none.

    The repository root (for `import launch` and `modules`) and the extension folder are put on
    PYTHONPATH, and the launcher's flags travel in COMMANDLINE_ARGS, so `launch.args` agrees.
    """
    installer = extension.path / "install.py"
    if not installer.is_file():
        return None
    env = os.environ.copy()
    if _argv is not None:
        env["COMMANDLINE_ARGS"] = shlex.join(_argv)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(script_path), str(extension.path), env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    result = subprocess.run([python, str(installer)], cwd=str(script_path), env=env, capture_output=True,
                            text=True, encoding="utf8", errors="replace", check=False)
    if result.returncode == 0:
        return InstallerResult(extension.name, True, result.stdout)
    error = (result.stderr.strip() or result.stdout.strip() or f"exit code {result.returncode}")
    return InstallerResult(extension.name, False, result.stdout, error)


def update_extensions(extensions: Iterable[ExtensionDir]) -> list[str]:
    """`git pull --ff-only` in every user extension that is a git checkout (--update-all-extensions).
    Returns the names that failed to update; each failure is reported and the others still update."""
    failed = []
    for ext in extensions:
        if ext.is_builtin or not (ext.path / ".git").exists():
            continue
        try:
            run([git, "-C", str(ext.path), "pull", "--ff-only"], desc=f"Updating extension {ext.name}",
                errdesc=f"Couldn't update extension {ext.name}")
        except RuntimeError as e:
            print(str(e), file=sys.stderr, flush=True)
            failed.append(ext.name)
    return failed


def run_extension_installers(extensions: Iterable[ExtensionDir]) -> list[InstallerResult]:
    """Run every installer; a failing one is reported with the extension's name and start-up goes on."""
    results = []
    for ext in extensions:
        res = run_extension_installer(ext)
        if res is None:
            continue
        results.append(res)
        if res.output.strip():
            print(res.output.rstrip(), flush=True)
        if not res.ok:
            print(f"Error running install.py for extension {ext.name} ({ext.path}):\n{res.error}\n"
                  "Start-up continues without whatever that installer was to provide.", file=sys.stderr, flush=True)
    return results


# --- the whole preparation ------------------------------------------------------------------------------

@dataclass
class PrepareReport:
    """What prepare_environment did, for the launcher's summary and for tests."""

    installed_torch: bool = False
    installed_requirements: bool = False
    installers: list[InstallerResult] = field(default_factory=list)
    update_failures: list[str] = field(default_factory=list)

    @property
    def failed_installers(self) -> list[InstallerResult]:
        return [r for r in self.installers if not r.ok]


def torch_command() -> str:
    return os.environ.get("TORCH_COMMAND", DEFAULT_TORCH_COMMAND)


def prepare_environment(args: argparse.Namespace, argv: list[str] | None = None, *,
                        requirements_file: Path = REQUIREMENTS_FILE, extensions_dir: Path | None = None,
                        builtin_dir: Path | None = None, config_file: Path | None = None) -> PrepareReport:
    """Install torch (TORCH_COMMAND) when it is missing, requirements.txt when it is not satisfied
    (unless --skip-install), update extensions with --update-all-extensions, then run each enabled
    extension's install.py (unless --skip-install).

    Folders default to those the flags select (--data-dir), as the server will see them.
    """
    from modules.paths import Paths

    set_args(args, argv)
    report = PrepareReport()
    paths = Paths.from_args(args)
    extensions_dir = extensions_dir or paths.extensions_dir
    builtin_dir = builtin_dir or paths.extensions_builtin_dir
    config_file = config_file or paths.config_file

    if getattr(args, "reinstall_torch", False) or importlib.util.find_spec("torch") is None:
        command = torch_command()
        run(f'"{python}" -m {command}', f"Installing torch: {command}", "Couldn't install torch", live=True)
        report.installed_torch = True

    extensions = list_extensions(extensions_dir, builtin_dir, read_settings(config_file), args)
    if getattr(args, "update_all_extensions", False):
        report.update_failures = update_extensions(extensions)

    if getattr(args, "skip_install", False):
        return report

    if not requirements_met(requirements_file):
        run(f'"{python}" -m pip install -r "{requirements_file}" --prefer-binary'
            + (f" --index-url {index_url}" if index_url else ""),
            f"Installing requirements from {requirements_file.name}", "Couldn't install requirements", live=True)
        report.installed_requirements = True

    report.installers = run_extension_installers(extensions)
    return report

