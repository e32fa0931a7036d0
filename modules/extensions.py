"""Extensions: discovery, per-extension errors, static files, and management (install, enable,
update, the index of available extensions).

An extension is a folder under `extensions/` (the user's) or `extensions-builtin/` (shipped). What
A1111 extensions read is here under A1111's names: `active()` and `extensions`, each `Extension`
with `.name`, `.path`, `.enabled`, `.is_builtin`, `.remote`, `.branch`, `.commit_hash`, `.version`.

Management functions are what the Extensions tab and the API call. They change code that will run
in this process, so they are refused when the server is reachable from other hosts (--listen,
--share, --server-name) unless --enable-insecure-extension-access is given (`check_access`).
"""

from __future__ import annotations

import configparser
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from modules import errors

log = logging.getLogger(__name__)

DEFAULT_INDEX_URL = ("https://raw.githubusercontent.com/AUTOMATIC1111/stable-diffusion-webui-extensions/"
                     "master/index.json")
"""A1111's extension index; `WEBUI_EXTENSIONS_INDEX` in the environment replaces it."""

GIT = os.environ.get("GIT", "git")


class ExtensionAccessError(PermissionError):
    """Extension management refused: the server is reachable from other hosts."""


class ExtensionManagementError(RuntimeError):
    """An install / update / enable request that could not be carried out; the message says why."""


# --- metadata.ini --------------------------------------------------------------------------------------

def _split_list(value: str | None) -> list[str]:
    return [x.strip() for x in re.split(r"[,\s]+", value or "") if x.strip()]


class ExtensionMetadata:
    """`metadata.ini`: `[Extension] Name=, Requires=` and `[scripts/<file>] / [callbacks/<name>]
    Requires=, Before=, After=` for ordering."""

    def __init__(self, path: Path, canonical_name: str) -> None:
        self.path = path
        self.config = configparser.ConfigParser()
        filename = path / "metadata.ini"
        if filename.is_file():
            try:
                self.config.read(filename, encoding="utf8")
            except configparser.Error as e:
                errors.report(f"Error reading {filename}: {e}")
        self.canonical_name = self.config.get("Extension", "Name", fallback=canonical_name).strip().lower()
        self.requires = self.get_script_requirements("Requires", "Extension")

    def get_script_requirements(self, field_name: str, section: str, extra_section: str | None = None) -> list[str]:
        """Lower-cased names listed under `field_name` of `section` (and of `extra_section`)."""
        values = [self.config.get(section, field_name, fallback="")]
        if extra_section:
            values.append(self.config.get(extra_section, field_name, fallback=""))
        return [x.lower() for v in values for x in _split_list(v)]


# --- extensions ----------------------------------------------------------------------------------------

@dataclass
class ExtensionError:
    """Something of an extension that failed: at import, in install.py or in a hook."""

    what: str
    exception: str
    traceback: str = ""
    time: str = field(default_factory=lambda: datetime.now().isoformat(timespec="seconds"))


_errors: dict[str, list[ExtensionError]] = {}
_errors_lock = threading.Lock()
MAX_ERRORS_PER_EXTENSION = 20


def record_error(name: str, what: str, exception: str, traceback: str = "") -> None:
    """Keep an error of extension `name` for the Extensions tab (newest last, a bounded list)."""
    with _errors_lock:
        items = _errors.setdefault(name, [])
        items.append(ExtensionError(what, exception, traceback))
        del items[:-MAX_ERRORS_PER_EXTENSION]


def errors_of(name: str) -> list[ExtensionError]:
    with _errors_lock:
        return list(_errors.get(name, []))


def all_errors() -> dict[str, list[ExtensionError]]:
    with _errors_lock:
        return {k: list(v) for k, v in _errors.items() if v}


def clear_errors() -> None:
    with _errors_lock:
        _errors.clear()


class Extension:
    """One extension folder."""

    def __init__(self, name: str, path: str | os.PathLike, enabled: bool = True, is_builtin: bool = False,
                 metadata: ExtensionMetadata | None = None) -> None:
        self.name = name
        self.path = str(path)
        self.enabled = enabled
        self.is_builtin = is_builtin
        self.canonical_name = name.lower()
        self.metadata = metadata or ExtensionMetadata(Path(path), self.canonical_name)
        self.status = ""
        self.can_update = False
        self.have_info_from_repo = False
        self.remote: str | None = None
        self.branch: str | None = None
        self.commit_hash: str | None = None
        self.commit_date: int | None = None
        self.version = ""

    def __repr__(self) -> str:
        return f"Extension({self.name!r}, enabled={self.enabled}, builtin={self.is_builtin})"

    @property
    def errors(self) -> list[ExtensionError]:
        return errors_of(self.name)

    @property
    def is_git(self) -> bool:
        return (Path(self.path) / ".git").exists()

    def read_info_from_repo(self) -> None:
        """remote, branch, commit hash and date from the folder's git checkout (nothing when it is none)."""
        if self.have_info_from_repo:
            return
        self.have_info_from_repo = True
        if not self.is_git:
            return
        try:
            self.remote = _git(self.path, "config", "--get", "remote.origin.url") or None
            branch = _git(self.path, "rev-parse", "--abbrev-ref", "HEAD")
            self.branch = None if branch == "HEAD" else branch
            self.commit_hash = _git(self.path, "rev-parse", "HEAD") or None
            self.commit_date = int(_git(self.path, "log", "-1", "--format=%ct") or 0) or None
            self.version = (self.commit_hash or "")[:8]
        except ExtensionManagementError as e:
            self.status = "unknown"
            log.warning("could not read git details of extension %s: %s", self.name, e)

    def list_files(self, subdir: str, extension: str) -> list[str]:
        """Files `<path>/<subdir>/*<extension>`, sorted by name (A1111: scripts, javascript, ...)."""
        folder = Path(self.path) / subdir
        if not folder.is_dir():
            return []
        return [str(f) for f in sorted(folder.iterdir(), key=lambda p: p.name.lower())
                if f.is_file() and f.name.lower().endswith(extension.lower())]

    def check_updates(self) -> None:
        """`git fetch`, then compare HEAD with its upstream: status "latest" or "behind"."""
        self.read_info_from_repo()
        if not self.is_git or not self.remote:
            self.status = "unknown"
            self.can_update = False
            return
        _git(self.path, "fetch", "--quiet", timeout=120)
        try:
            upstream = _git(self.path, "rev-parse", "@{u}")
        except ExtensionManagementError:
            upstream = _git(self.path, "rev-parse", "FETCH_HEAD")
        head = _git(self.path, "rev-parse", "HEAD")
        self.can_update = bool(upstream) and upstream != head
        self.status = "behind HEAD" if self.can_update else "latest"

    def fetch_and_reset_hard(self, commit: str | None = None) -> None:
        """Bring the checkout to `commit` (default: its upstream), discarding local changes."""
        _git(self.path, "fetch", "--all", "--quiet", timeout=120)
        target = commit
        if target is None:
            try:
                target = _git(self.path, "rev-parse", "@{u}")
            except ExtensionManagementError:
                target = "FETCH_HEAD"
        _git(self.path, "reset", "--hard", target)
        self.have_info_from_repo = False
        self.read_info_from_repo()
        self.can_update = False
        self.status = "latest"


def _git(cwd: str | os.PathLike, *args: str, timeout: float = 60) -> str:
    try:
        result = subprocess.run([GIT, "-C", os.fspath(cwd), *args], capture_output=True, text=True,
                                encoding="utf8", errors="replace", timeout=timeout, check=False,
                                env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ExtensionManagementError(f"git {' '.join(args)} failed: {e}") from None
    if result.returncode != 0:
        raise ExtensionManagementError(f"git {' '.join(args)} failed: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout.strip()


extensions: list[Extension] = []
"""Every extension found by the last `list_extensions()`, enabled or not (A1111 name)."""


def _roots() -> tuple[Path, Path]:
    from modules import shared

    return Path(shared.paths.extensions_builtin_dir), Path(shared.paths.extensions_dir)


def disabled_mode() -> str:
    """"none", "extra" (only built-ins) or "all", from the flags and the `disable_all_extensions` setting."""
    from modules import shared

    if getattr(shared.cmd_opts, "disable_all_extensions", False):
        return "all"
    mode = str(getattr(shared.opts, "disable_all_extensions", "none") or "none")
    if getattr(shared.cmd_opts, "disable_extra_extensions", False) and mode != "all":
        return "extra"
    return mode if mode in ("none", "extra", "all") else "none"


def list_extensions() -> list[Extension]:
    """Scan both folders (built-ins first, each sorted by name) into `extensions`."""
    from modules import shared

    disabled = set(getattr(shared.opts, "disabled_extensions", None) or [])
    mode = disabled_mode()
    found: list[Extension] = []
    builtin_dir, user_dir = _roots()
    for root, builtin in ((builtin_dir, True), (user_dir, False)):
        if not root.is_dir():
            continue
        for folder in sorted(root.iterdir(), key=lambda p: p.name):
            if not folder.is_dir() or folder.name.startswith("."):
                continue
            enabled = (folder.name not in disabled and mode != "all" and not (mode == "extra" and not builtin))
            found.append(Extension(folder.name, folder, enabled=enabled, is_builtin=builtin))
    _check_requirements(found)
    extensions[:] = found
    return extensions


def _check_requirements(found: list[Extension]) -> None:
    """An enabled extension whose `Requires=` names an extension that is missing or disabled cannot
    work: it is disabled for this run and the reason recorded."""
    enabled_names = {e.metadata.canonical_name for e in found if e.enabled} | {e.canonical_name for e in found if e.enabled}
    for ext in found:
        if not ext.enabled:
            continue
        missing = [r for r in ext.metadata.requires if r not in enabled_names]
        if missing:
            ext.enabled = False
            message = f"requires {', '.join(missing)}, which is not installed or is disabled"
            errors.report(f"Extension {ext.name} {message}; it is not loaded")
            record_error(ext.name, "requirements", message)


def active() -> list[Extension]:
    """The enabled extensions (A1111: `extensions.active()`)."""
    return [e for e in extensions if e.enabled]


def find_extension(name: str) -> Extension | None:
    wanted = name.lower()
    return next((e for e in extensions if e.name.lower() == wanted or e.canonical_name == wanted), None)


def extension_for_path(path: str | os.PathLike) -> Extension | None:
    """The extension whose folder holds `path`, or None."""
    path = os.path.abspath(os.fspath(path))
    for ext in extensions:
        root = os.path.abspath(ext.path)
        if path == root or path.startswith(root + os.sep):
            return ext
    return None


def javascript_files() -> list[str]:
    """The `.js` / `.mjs` files of the enabled extensions (built-ins first), for the page head."""
    return [f for e in active() for f in e.list_files("javascript", ".js") + e.list_files("javascript", ".mjs")]


def css_files() -> list[str]:
    """Each enabled extension's style.css, for the page."""
    return [os.path.join(e.path, "style.css") for e in active() if os.path.isfile(os.path.join(e.path, "style.css"))]


def localization_files() -> list[str]:
    return [f for e in active() for f in e.list_files("localizations", ".json")]


# --- management ----------------------------------------------------------------------------------------

def access_allowed(args: Any = None) -> bool:
    """False when the server is reachable from other hosts and insecure access was not asked for."""
    from modules import cmd_args, shared

    args = args if args is not None else shared.cmd_opts
    return not cmd_args.is_non_local(args) or bool(getattr(args, "enable_insecure_extension_access", False))


def check_access(args: Any = None) -> None:
    if not access_allowed(args):
        raise ExtensionAccessError(
            "extension management is disabled because the server is reachable from other hosts "
            "(--listen, --share or --server-name); start it with --enable-insecure-extension-access to allow it")


def _dirname_from_url(url: str) -> str:
    name = url.rstrip("/").rsplit("/", 1)[-1]
    return name[:-4] if name.endswith(".git") else name


_manage_lock = threading.Lock()


def install_from_url(url: str, branch: str | None = None, dirname: str | None = None, *,
                     run_installer: bool = True) -> Extension:
    """`git clone` `url` (optionally one branch) into extensions/<dirname>, then run its install.py.

    The clone goes to a temporary folder first and is moved into place only when complete, so a
    failed clone never leaves a half extension behind.
    """
    check_access()
    url = (url or "").strip()
    if not url:
        raise ExtensionManagementError("no URL given")
    name = (dirname or "").strip() or _dirname_from_url(url)
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ExtensionManagementError(f"cannot make an extension folder name from {url!r}; give one")
    _builtin_dir, user_dir = _roots()
    target = user_dir / name
    with _manage_lock:
        if target.exists():
            raise ExtensionManagementError(f"extension folder {target} exists already")
        user_dir.mkdir(parents=True, exist_ok=True)
        tmp_root = Path(tempfile.mkdtemp(prefix=".install-", dir=user_dir))
        try:
            args = ["clone", "--quiet", "--filter=blob:none"]
            if branch:
                args += ["--branch", branch]
            _git(tmp_root, *args, "--", url, name, timeout=600)
            clone = tmp_root / name
            if (clone / ".gitmodules").exists():
                _git(clone, "submodule", "update", "--init", "--recursive", "--quiet", timeout=600)
            os.replace(clone, target)
        finally:
            shutil.rmtree(tmp_root, ignore_errors=True)
    ext = Extension(name, target, enabled=True, is_builtin=False)
    if run_installer:
        run_installer_of(ext)
    list_extensions()
    return find_extension(name) or ext


def run_installer_of(ext: Extension) -> bool:
    """Run the extension's install.py (if any); a failure is reported and recorded, not raised."""
    from modules import launch_utils

    result = launch_utils.run_extension_installer(launch_utils.ExtensionDir(ext.name, Path(ext.path), ext.is_builtin))
    if result is None or result.ok:
        return True
    errors.report(f"Error running install.py for extension {ext.name}:\n{result.error}")
    record_error(ext.name, "install.py", result.error.strip().splitlines()[-1] if result.error else "failed",
                 result.error)
    return False


def record_installer_results(results: list[Any]) -> None:
    """Errors of the install.py runs the launcher did (launch_utils.InstallerResult) for the tab."""
    for r in results:
        if not r.ok:
            record_error(r.extension, "install.py", (r.error or "failed").strip().splitlines()[-1], r.error)


def set_enabled(name: str, enabled: bool, *, save: bool = True) -> list[str]:
    """Enable or disable an extension (persisted as `disabled_extensions` in config.json); takes effect
    at the next start. Returns the new disabled list."""
    check_access()
    from modules import shared

    ext = find_extension(name)
    if ext is None:
        raise ExtensionManagementError(f"no extension named {name!r}; installed: "
                                       f"{', '.join(e.name for e in extensions) or 'none'}")
    disabled = [n for n in (getattr(shared.opts, "disabled_extensions", None) or []) if n != ext.name]
    if not enabled:
        disabled.append(ext.name)
    shared.opts.set("disabled_extensions", disabled)
    if save:
        shared.opts.save()
    mode = disabled_mode()
    ext.enabled = enabled and mode != "all" and not (mode == "extra" and not ext.is_builtin)
    return disabled


def set_disabled(names: list[str], disable_all: str | None = None, *, save: bool = True) -> None:
    """Replace the whole disabled list (the tab's "Apply"), and optionally `disable_all_extensions`."""
    check_access()
    from modules import shared

    shared.opts.set("disabled_extensions", list(names))
    if disable_all is not None:
        shared.opts.set("disable_all_extensions", disable_all)
    if save:
        shared.opts.save()
    list_extensions()


def check_updates(names: list[str] | None = None) -> dict[str, str]:
    """Fetch each (named) user extension that is a git checkout; returns name -> status
    ("latest", "behind HEAD", "unknown", or "error: ...")."""
    check_access()
    out: dict[str, str] = {}
    for ext in extensions:
        if ext.is_builtin or (names is not None and ext.name not in names):
            continue
        try:
            ext.check_updates()
            out[ext.name] = ext.status
        except ExtensionManagementError as e:
            ext.status = "error"
            out[ext.name] = f"error: {e}"
            record_error(ext.name, "update check", str(e))
    return out


def update(name: str) -> Extension:
    """Bring an extension to its upstream's latest commit, then run its install.py."""
    check_access()
    ext = find_extension(name)
    if ext is None:
        raise ExtensionManagementError(f"no extension named {name!r}")
    if not ext.is_git:
        raise ExtensionManagementError(f"extension {name} is not a git checkout; it cannot be updated")
    with _manage_lock:
        ext.fetch_and_reset_hard()
    run_installer_of(ext)
    return ext


@dataclass
class ExtensionIndex:
    """The index of available extensions, or why it could not be read."""

    ok: bool
    url: str
    extensions: list[dict[str, Any]] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    error: str = ""


def index_url() -> str:
    return os.environ.get("WEBUI_EXTENSIONS_INDEX", DEFAULT_INDEX_URL)


def load_index(url: str | None = None, timeout: float = 10.0) -> ExtensionIndex:
    """Read the JSON index of available extensions; with no network, a clear message instead.

    Each entry is marked `installed` when an extension with its URL or folder name is present.
    """
    url = url or index_url()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = json.loads(response.read().decode("utf8"))
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        return ExtensionIndex(False, url, error=f"could not read the extension index from {url}: {reason} "
                                                f"(is this machine connected to the internet?)")
    except ValueError as e:
        return ExtensionIndex(False, url, error=f"the extension index at {url} is not valid JSON: {e}")
    items = data.get("extensions", []) if isinstance(data, dict) else []
    tags = data.get("tags", {}) if isinstance(data, dict) else {}
    installed_urls = set()
    installed_names = {e.name.lower() for e in extensions}
    for e in extensions:
        e.read_info_from_repo()
        if e.remote:
            installed_urls.add(e.remote.rstrip("/").removesuffix(".git").lower())
    out = []
    for item in items:
        if not isinstance(item, dict):
            continue
        item_url = str(item.get("url", ""))
        key = item_url.rstrip("/").removesuffix(".git").lower()
        out.append({**item, "installed": key in installed_urls or _dirname_from_url(item_url).lower() in installed_names})
    return ExtensionIndex(True, url, out, tags if isinstance(tags, dict) else {})


def describe() -> list[dict[str, Any]]:
    """Every extension for the Extensions tab / API: name, path, enabled, built-in, git details, errors."""
    out = []
    for e in extensions:
        e.read_info_from_repo()
        out.append({
            "name": e.name, "path": e.path, "enabled": e.enabled, "is_builtin": e.is_builtin,
            "remote": e.remote, "branch": e.branch, "commit_hash": e.commit_hash, "commit_date": e.commit_date,
            "version": e.version, "status": e.status,
            "errors": [{"what": x.what, "exception": x.exception, "traceback": x.traceback, "time": x.time}
                       for x in e.errors],
        })
    return out
