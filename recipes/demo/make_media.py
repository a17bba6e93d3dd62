"""The README's media: example clips with their spectrograms, and a screenshot of the web app.

    python recipes/demo/make_media.py --out docs/demo [--model openmagnet/demo] [--screenshot docs/app.png]

Each example prompt is generated with the model's recommended settings (the bundled model's stored ones) and a
fixed seed, written as DIR/<name>.wav (peak-normalised 16-bit) and DIR/<name>.png. With --screenshot, the app is
served on a free local port, driven by headless Chromium through one generation, and photographed.
"""
import argparse
import socket
from pathlib import Path

import torch

from openmagnet import MAGNeT, audio_write
from openmagnet.audio import save_spectrogram

EXAMPLES = [
    ("piano_ballad", "a slow, sad piano ballad in A minor at 70 bpm", 1),
    ("funk_groove", "upbeat funk groove with slap bass and drums at 112 bpm", 2),
    ("strings_waltz", "gentle string ensemble waltz in D major, 90 bpm", 3),
    # a fast and a slow prompt: does the tempo follow the text? (README, issue 32)
    ("fast_rock", "a rapid, joyful hammond organ rock track with drums in A major at 176 bpm", 4),
    ("slow_folk", "a slow, calm folk piece with nylon guitar and harmonica at 60 bpm", 5),
]


def examples(model_name: str, out: Path) -> None:
    model = MAGNeT.get_pretrained(model_name)
    model.set_generation_params(**model.recommended_params())  # the bundled model's stored settings
    for name, text, seed in EXAMPLES:
        wav = model.generate([text], generator=torch.Generator(device=model.device).manual_seed(seed))[0].cpu()
        audio_write(out / name, wav, model.sample_rate, strategy="peak")
        save_spectrogram(wav, model.sample_rate, out / f"{name}.png", title=f'"{text}" (seed {seed})', max_hz=8000)
        print(out / f"{name}.wav")


def screenshot(model_name: str, path: Path, chromium: str) -> None:
    from playwright.sync_api import sync_playwright

    from openmagnet.app import serve

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo = serve(port=port, model=model_name, block=False)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, headless=True)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/")
            page.locator("#prompts textarea").fill(EXAMPLES[1][1] + "\n" + EXAMPLES[0][1])
            page.locator("#generate").click()
            page.wait_for_function("document.querySelector('#status').innerText.startsWith('Done')", timeout=600_000)
            page.wait_for_function("[...document.querySelectorAll('#spec-1 img')].some(i => i.naturalWidth > 0)")
            page.screenshot(path=str(path), full_page=True)
            browser.close()
    finally:
        demo.close()
    print(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="openmagnet/demo")
    p.add_argument("--out", type=Path, default=None, help="folder for the example clips and spectrograms")
    p.add_argument("--screenshot", type=Path, default=None, help="PNG of the web app after one generation")
    p.add_argument("--chromium", default="/usr/bin/chromium")
    a = p.parse_args()
    if a.out is not None:
        examples(a.model, a.out)
    if a.screenshot is not None:
        screenshot(a.model, a.screenshot, a.chromium)


if __name__ == "__main__":
    main()
