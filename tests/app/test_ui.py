"""The web page end to end (openmagnet/app/ui.py): served on localhost and driven by headless Chromium
(Debian's /usr/bin/chromium through Playwright)."""
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
    page.get_by_text("decoding step").first.wait_for(timeout=60_000)  # the live progress is showing
    page.locator("#interrupt").click()
    page.wait_for_function("document.querySelector('#status').innerText.startsWith('Interrupted')", timeout=60_000)
    assert "stopped at decoding step" in _status(page) and "of 430" in _status(page)
