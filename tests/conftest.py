"""Suite-wide guards and fixtures.

The network guard makes the whole run fail if any code opens a socket to an address that is not
loopback: Easel must never reach a model hub or anything else at run time.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

import modules  # noqa: F401  (sets the offline environment before diffusers is imported)

_outbound_attempts: list[str] = []
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo


def _is_local(address: object) -> bool:
    if isinstance(address, (str, bytes)):
        return True  # AF_UNIX path
    if not isinstance(address, tuple) or not address:
        return True
    host = address[0]
    if host in ("localhost", "", None):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _guarded_connect(self: socket.socket, address: object) -> None:
    if not _is_local(address):
        _outbound_attempts.append(repr(address))
        raise ConnectionRefusedError(f"test suite forbids non-loopback connections: {address!r}")
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: object) -> int:
    if not _is_local(address):
        _outbound_attempts.append(repr(address))
        raise ConnectionRefusedError(f"test suite forbids non-loopback connections: {address!r}")
    return _real_connect_ex(self, address)


def _guarded_getaddrinfo(host, *args, **kwargs):  # type: ignore[no-untyped-def]
    if host not in (None, "localhost", "") and isinstance(host, str):
        try:
            ipaddress.ip_address(host)
        except ValueError:
            _outbound_attempts.append(f"name lookup {host!r}")
            raise socket.gaierror(f"test suite forbids name lookups: {host!r}") from None
    return _real_getaddrinfo(host, *args, **kwargs)


socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
socket.getaddrinfo = _guarded_getaddrinfo  # type: ignore[assignment]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _outbound_attempts:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        msg = "network guard: non-loopback connections were attempted:\n  " + "\n  ".join(sorted(set(_outbound_attempts)))
        if reporter is not None:
            reporter.write_line(msg, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Browser tests run last: Playwright's session keeps an event loop on the main thread, which
    # would stop later tests from starting their own with asyncio.run.
    items.sort(key=lambda item: "e2e" in item.keywords or "tests/e2e/" in item.nodeid)

    import torch

    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[Path]:
    """Easel initialised over an empty data folder (`tmp_path`); put back to defaults afterwards."""
    from modules import cmd_args, shared

    args = cmd_args.parse_args(["--data-dir", str(tmp_path), "--models-dir", str(tmp_path / "models")])
    shared.initialize(args)
    yield tmp_path
    shared.initialize(cmd_args.defaults(), load_settings=False)


# Tiny-model fixtures (session-scoped builders) for every test module.
from tiny_models import tiny_models_dir, tiny_sd1_model  # noqa: E402, F401
