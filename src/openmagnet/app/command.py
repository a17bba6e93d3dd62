"""Command-line parser of `openmagnet app` (argparse only: importing this module costs nothing; the page and its
engine are imported when the command runs)."""
from __future__ import annotations

import argparse
import typing as tp

from ..config import DEFAULT_MODEL_HELP


def add_app_parser(sub: tp.Any) -> None:
    a = sub.add_parser("app", help="serve the web page (gradio)",
                       description="Serve a local web page for text-to-music, text-to-sound and continuation "
                                   "(needs the `app` extra).")
    a.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    a.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    a.add_argument("--share", action="store_true",
                   help="also open a public gradio.live link (needs the internet and --auth or --auth-file)")
    a.add_argument("--share-unsafe", action="store_true",
                   help="--share without a login: anyone with the link can use it")
    a.add_argument("--auth", action="append", default=[], metavar="USER:PASSWORD",
                   help="require this login (repeatable); other users on this machine can see it in the process "
                        "list, so prefer --auth-file")
    a.add_argument("--auth-file", default=None, metavar="FILE",
                   help="require one of the logins in FILE (one USER:PASSWORD per line, # comments)")
    a.add_argument("--model-dir", action="append", default=[], metavar="DIR",
                   help="visitors may type model directories inside DIR (repeatable); otherwise only the listed "
                        "models and --model")
    a.add_argument("--allow-any-model", action="store_true",
                   help="visitors may load any path or hub id typed in the page")
    a.add_argument("--max-upload-mb", type=float, default=50.0, help="largest audio upload in MB (default 50)")
    a.add_argument("--max-upload-seconds", type=float, default=120.0,
                   help="longest audio upload in seconds (default 120)")
    a.add_argument("--model", default=None,
                   help=f"model selected when the page opens (default {DEFAULT_MODEL_HELP})")
    a.add_argument("--out", default=None, help="folder for the generated files (default: a new temporary folder)")
    a.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    a.set_defaults(func=_app)


def _app(args: argparse.Namespace) -> int:
    from . import serve  # lazy: the web app (gradio)
    from .security import parse_login, read_auth_file

    logins = [parse_login(value) for value in args.auth]
    if args.auth_file:
        logins += read_auth_file(args.auth_file)
    serve(host=args.host, port=args.port, share=args.share or args.share_unsafe, model=args.model, out_dir=args.out,
          threads=args.threads, auth=logins, share_unsafe=args.share_unsafe, model_dirs=args.model_dir,
          allow_any_model=args.allow_any_model, max_upload_mb=args.max_upload_mb,
          max_upload_seconds=args.max_upload_seconds)
    return 0
