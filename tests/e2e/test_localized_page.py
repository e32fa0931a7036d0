"""UI localization in a real page: the test extension ext_l10n ships localizations/xx.json and
config.json chooses it before the server starts. Labels, buttons, placeholders, titles and dropdown
options are translated; text typed into the prompt box is not; choosing "None" through the API
brings English back at the next page load, without a restart."""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import make_data_dir, screenshot
from helpers import field_value
from server import EaselServer

DATA = Path(__file__).resolve().parents[1] / "extensions" / "data"
TIMEOUT = 20_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EaselServer]:
    data = make_data_dir(tmp_path_factory.mktemp("easel-l10n"), settings={"localization": "xx"})
    shutil.copytree(DATA / "ext_l10n", data / "extensions" / "ext_l10n")
    srv = EaselServer(data, extra_args=["--api"])
    srv.write_ui_config()
    srv.start()
    yield srv
    srv.stop()


def _label(page: object, elem_id: str) -> str:
    return page.locator(f"#{elem_id} [data-testid='block-info']").first.inner_text().strip()


def test_page_is_translated_but_typed_text_is_not(server: EaselServer, open_page) -> None:
    rec = open_page()
    page = rec.page
    generate = page.locator("#txt2img_generate")
    assert generate.inner_text().strip() == "Erzeugen"
    assert _label(page, "txt2img_sampling") == "Abtastverfahren"
    # A translation holding "</script>" stays text: it neither ends the head script nor becomes markup.
    assert _label(page, "txt2img_batch_count") == "Anzahl </script><b>Stapel</b>"
    assert page.locator("#txt2img_batch_count b").count() == 0
    neg = page.locator("#txt2img_neg_prompt textarea")
    assert neg.get_attribute("placeholder") == "Negativer Prompt (xx)"
    # A title set by the page's own script after load (the tool button hint) is translated too.
    page.wait_for_function("document.getElementById('txt2img_clear_prompt').title === 'Prompt leeren'",
                           timeout=TIMEOUT)

    # Dropdown options show the translation; the chosen value stays the English name.
    page.locator("#txt2img_sampling input").click()
    option = page.locator("#txt2img_sampling li[role=option]", has_text="Euler-Vorfahr").first
    option.wait_for(timeout=TIMEOUT)
    option.click()
    page.wait_for_function("document.querySelector('#txt2img_sampling input').value === 'Euler a'",
                           timeout=TIMEOUT)

    # What the user types is theirs, even when it equals a translated string.
    prompt = page.locator("#txt2img_prompt textarea")
    prompt.fill("Generate")
    prompt.blur()
    page.wait_for_timeout(300)
    assert field_value(page, "txt2img_prompt") == "Generate"
    screenshot(page, "localization-xx")
    rec.check_clean()

    # The setting is listed by the API with its choice; "None" reaches the next page load.
    options = json.loads(urllib.request.urlopen(server.url + "/sdapi/v1/options").read())
    assert options["localization"] == "xx"
    request = urllib.request.Request(server.url + "/sdapi/v1/options", method="POST",
                                     data=json.dumps({"localization": "None"}).encode(),
                                     headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request).read()
    rec.open()
    assert page.locator("#txt2img_generate").inner_text().strip() == "Generate"
    assert _label(page, "txt2img_sampling") == "Sampling method"
    assert page.evaluate("window.localization === undefined")
