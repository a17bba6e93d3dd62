"""The web page end to end (openmagnet/app/ui.py): served on localhost and driven by headless Chromium
(Debian's /usr/bin/chromium through Playwright)."""
import re
import socket

import pytest

from tests.app.conftest import CHROMIUM, EMPTY_PROMPT, FAST, MODEL


# ---------------------------------------------------------------------------------------------- browser
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    pytest.importorskip("gradio", reason="the app extra is not installed: pip install 'openmagnet[app]'")
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    from openmagnet.app import serve

    port = _free_port()
    demo = serve(port=port, model=MODEL, out_dir=tmp_path_factory.mktemp("app"), block=False)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/")
            page.locator("#prompts textarea").wait_for()
            yield page
            browser.close()
    finally:
        demo.close()


def _set_steps(page, steps):
    if not page.get_by_label("Steps, codebook 1").is_visible():
        page.get_by_text("Sampling", exact=True).click()  # open the accordion
    for k, value in enumerate(steps):
        box = page.get_by_label(f"Steps, codebook {k + 1}")
        box.fill(str(value))
        box.press("Tab")


def _status(page) -> str:
    return page.locator("#status").inner_text()


def test_browser_generate_then_empty_prompt(page, tmp_path):
    _set_steps(page, FAST)
    page.locator("#prompts textarea").fill("upbeat funk groove with slap bass and drums")
    page.locator("#generate").click()
    page.wait_for_function("[...document.querySelectorAll('#clip-0 audio')].some(a => a.src && a.src.length > 0)",
                           timeout=120_000)
    page.wait_for_function("[...document.querySelectorAll('#spec-0 img')].some(i => i.src && i.naturalWidth > 0)",
                           timeout=30_000)
    assert _status(page).startswith("Done: Generated 1 clip(s) of 10 s")
    assert "on cpu (float32)" in page.locator("#model-info").inner_text()
    page.screenshot(path=str(tmp_path / "app.png"), full_page=True)

    page.locator("#prompts textarea").fill("")
    page.locator("#generate").click()
    page.wait_for_function("document.querySelector('#status').innerText.startsWith('Error')", timeout=30_000)
    assert _status(page) == "Error: " + EMPTY_PROMPT
    assert not page.locator("#clip-0").is_visible()


def test_browser_interrupt(page):
    _set_steps(page, (400, 10, 10, 10))
    page.locator("#prompts textarea").fill("a long one")
    page.locator("#generate").click()
    page.get_by_text(re.compile(r"decoding step \d+ / 430")).first.wait_for(timeout=60_000)  # "step k / N", live
    page.locator("#interrupt").click()
    page.wait_for_function("document.querySelector('#status').innerText.startsWith('Interrupted')", timeout=60_000)
    assert "stopped at decoding step" in _status(page) and "of 430" in _status(page)


# ---------------------------------------------------------------------------------------------- the API
def test_the_api_has_one_generate_endpoint_with_named_parameters(tmp_path):
    """gradio_client sees /run with the page's names (it saw s1..s4 and a second /run_1 for the prompt box's
    Enter), only the prompts required (the audio upload was required too), and /interrupt; the first 17 keep their
    order, so clients that pass them positionally (bench/app_load.py, test_security.py) keep working."""
    pytest.importorskip("gradio", reason="the app extra is not installed: pip install 'openmagnet[app]'")
    from openmagnet.app.engine import Engine
    from openmagnet.app.ui import build_app, progress_text

    info = build_app(Engine(tmp_path)).get_api_info()
    assert sorted(info["named_endpoints"]) == ["/interrupt", "/run"] and not info["unnamed_endpoints"]
    parameters = info["named_endpoints"]["/run"]["parameters"]
    assert [p["parameter_name"] for p in parameters] == [
        "model", "prompts", "span_arrangement", "device", "fast", "variations", "seed", "steps_codebook_1",
        "steps_codebook_2", "steps_codebook_3", "steps_codebook_4", "temperature", "top_p", "max_cfg", "min_cfg",
        "audio", "prompt_seconds", "remask_noise", "duration", "loop", "negative", "audio_mode", "region_start",
        "region_end", "speed"]
    assert [p["parameter_name"] for p in parameters if not p["parameter_has_default"]] == ["prompts"]
    assert progress_text(3, 50) == "decoding step 3 / 50"


def test_an_out_of_range_input_is_a_sentence_by_name(tmp_path):
    """A value out of range sent through the API (variations 100, steps 0) is answered by the engine's sentence
    naming the field, not refused by gradio with a traceback in the server's log; parameters go by name."""
    pytest.importorskip("gradio", reason="the app extra is not installed: pip install 'openmagnet[app]'")
    from gradio_client import Client

    from openmagnet.app import serve

    port = _free_port()
    demo = serve(port=port, model=MODEL, out_dir=tmp_path, block=False)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        status = client.predict(model=MODEL, prompts="happy rock", variations=100, api_name="/run")[0]
        assert status == "**Error:** Variations must be from 1 to 8, got 100."
        status = client.predict(model=MODEL, prompts="happy rock", steps_codebook_2=0, api_name="/run")[0]
        assert status == "**Error:** Decoding steps for codebook 2 must be from 1 to 500, got 0."
    finally:
        demo.close()
