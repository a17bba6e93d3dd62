"""`openmagnet app`: a local web page for generation (gradio). The engine (engine.py) holds the
logic and needs no web libraries; ui.py lays out the page; serve() starts it."""
from __future__ import annotations

import typing as tp
from pathlib import Path

from .engine import Engine


def serve(host: str = "127.0.0.1", port: int = 7860, share: bool = False, model: tp.Optional[str] = None,
          out_dir: tp.Optional[tp.Union[str, Path]] = None, threads: tp.Optional[int] = None,
          block: bool = True):
    """Build the page and serve it; returns the gradio Blocks (already running when block=False)."""
    import tempfile

    try:
        from .ui import build_app  # gradio: loaded when the page is served
    except ImportError as exc:
        raise ImportError(f"the web app needs gradio and matplotlib ({exc}): pip install 'openmagnet[app]'") from None
    out = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="openmagnet-app-"))
    out.mkdir(parents=True, exist_ok=True)
    demo = build_app(Engine(out, threads=threads), default_model=model)
    demo.launch(server_name=host, server_port=port, share=share, allowed_paths=[str(out.resolve())],
                prevent_thread_lock=not block, quiet=not block)
    return demo
