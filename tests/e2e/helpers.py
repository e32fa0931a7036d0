"""Page interactions shared by the browser tests (Gradio 6 DOM)."""

from __future__ import annotations

import time
from pathlib import Path

from PIL import Image

GEN_TIMEOUT = 90_000


def set_number(page: object, elem_id: str, value: object) -> None:
    """Type into the number box of a slider or number field and commit it."""
    box = page.locator(f"#{elem_id} input[type=number]").first
    box.fill(str(value))
    box.press("Enter")
    box.blur()


def set_text(page: object, elem_id: str, value: str) -> None:
    box = page.locator(f"#{elem_id} textarea, #{elem_id} input[type=text]").first
    box.fill(value)
    box.blur()


def field_value(page: object, elem_id: str) -> str:
    return page.locator(f"#{elem_id} input, #{elem_id} textarea").first.input_value()


def wait_generation_done(page: object, tab: str, timeout: int = GEN_TIMEOUT) -> None:
    """Wait until Generate is back (the job ended) and the progress bar is gone."""
    page.wait_for_selector(f"#{tab}_generate", state="visible", timeout=timeout)
    page.wait_for_selector(f"#{tab}_interrupt", state="hidden", timeout=timeout)


def generate(page: object, tab: str, timeout: int = GEN_TIMEOUT) -> None:
    """Click Generate and wait for the job to end: a new infotext (one with "Steps:") shows, or an
    error does, and the Interrupt button is gone. A fast job can end before its Interrupt button is
    ever seen; notes and status text shown while the job runs do not count as its end."""
    before = page.locator(f"#html_info_{tab}").inner_text()
    page.locator(f"#{tab}_generate").click()
    try:
        page.wait_for_function(
            "([tab, before]) => {"
            "  const info = document.querySelector('#html_info_' + tab);"
            "  const log = document.querySelector('#html_log_' + tab);"
            "  const text = info ? info.innerText : '';"
            "  return (text !== before && text.includes('Steps:'))"
            "    || (log && log.querySelector('.easel-error') !== null);"
            "}", arg=[tab, before], timeout=timeout)
    except Exception:
        from conftest import screenshot

        screenshot(page, f"{tab}-generate-did-not-finish")
        raise
    if page.locator(f"#html_log_{tab} .easel-error").count():
        raise AssertionError(page.locator(f"#html_log_{tab}").inner_text())
    wait_generation_done(page, tab, timeout)


def images_under(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.png"), key=lambda p: p.stat().st_mtime) if folder.exists() else []


def wait_for_new_image(folder: Path, before: list[Path], timeout: float = 90.0,
                       server: object | None = None) -> Path:
    """The newest image saved under `folder` since `before`; on failure the message carries the end of
    the server's log (pass `server`) so a CI failure says what the server did."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        new = [p for p in images_under(folder) if p not in before]
        if new:
            return new[-1]
        time.sleep(0.2)
    tail = "\n".join(server.read_log().splitlines()[-40:]) if server is not None else ""
    raise AssertionError(f"no new image under {folder}\n{tail}")


def parameters_of(path: Path) -> str:
    with Image.open(path) as im:
        return str(im.info.get("parameters", ""))
