"""`openmagnet app`: a local web page for generation (gradio). The engine (engine.py) holds the
logic and needs no web libraries; ui.py lays out the page; security.py holds what guards it (logins,
allowed models, upload limits, output names); serve() starts it."""
from __future__ import annotations

import sys
import typing as tp
from pathlib import Path

from .security import MAX_UPLOAD_MB, MAX_UPLOAD_SECONDS, Policy, check_share, exposure_warning


def serve(host: str = "127.0.0.1", port: int = 7860, share: bool = False, model: tp.Optional[str] = None,
          out_dir: tp.Optional[tp.Union[str, Path]] = None, threads: tp.Optional[int] = None,
          block: bool = True, auth: tp.Sequence[tp.Tuple[str, str]] = (), share_unsafe: bool = False,
          model_dirs: tp.Sequence[tp.Union[str, Path]] = (), allow_any_model: bool = False,
          max_upload_mb: float = MAX_UPLOAD_MB, max_upload_seconds: float = MAX_UPLOAD_SECONDS):
    """Build the page and serve it; returns the gradio Blocks (already running when block=False).

    auth: (user, password) logins checked by gradio's own login page (none: open). share needs a
    login unless share_unsafe. Visitors may load the bundled and released models, the `model` given
    here, model directories inside `model_dirs`, or anything with allow_any_model; uploads above
    max_upload_mb (refused by gradio before they are stored) or max_upload_seconds are refused."""
    import tempfile

    logins = [tuple(login) for login in auth]
    check_share(share, bool(logins), share_unsafe)
    policy = Policy(model_dirs=tuple(Path(d) for d in model_dirs), allow_any_model=allow_any_model,
                    known_models=(model,) if model else (), max_upload_mb=max_upload_mb,
                    max_upload_seconds=max_upload_seconds)
    from .engine import Engine  # torch: loaded when the page is served

    try:
        from .ui import build_app  # gradio: loaded when the page is served
    except ImportError as exc:
        raise ImportError(f"the web app needs gradio and matplotlib ({exc}): pip install 'openmagnet[app]'") from None
    out = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="openmagnet-app-"))
    out.mkdir(parents=True, exist_ok=True)
    warning = exposure_warning(host, bool(logins), share)
    if warning:
        print(warning, file=sys.stderr)
    demo = build_app(Engine(out, threads=threads, policy=policy), default_model=model)
    demo.launch(server_name=host, server_port=port, share=share, allowed_paths=[str(out.resolve())],
                prevent_thread_lock=not block, quiet=not block, auth=logins or None,
                max_file_size=policy.max_upload_bytes)
    return demo
