"""Command-line parser of `openmagnet convert` (importing it costs nothing: layouts.py imports the models and
transformers when a conversion runs)."""
from __future__ import annotations

import argparse
import typing as tp

from .layouts import LAYOUTS, convert


def add_convert_parser(sub: tp.Any) -> None:
    c = sub.add_parser("convert", help="convert a model to the transformers, audiocraft or openmagnet layout",
                       description="Write the model SRC (a hub id, a folder in any layout, a state_dict.bin, or "
                                   "openmagnet/demo) into the new folder DST in another layout: transformers "
                                   "(MagnetForConditionalGeneration, for transformers' Auto classes and the "
                                   "text-to-audio pipeline after `import openmagnet.transformers`), audiocraft "
                                   "(state_dict.bin, compression_state_dict.bin) or openmagnet "
                                   "(MAGNeT.save_pretrained). Every tensor lands and every parameter is filled; "
                                   "the weights are the source's bit for bit.")
    c.add_argument("src", metavar="SRC", help="the model to convert")
    c.add_argument("dst", metavar="DST", help="the folder to write (must not exist, or be empty)")
    c.add_argument("--to", required=True, choices=LAYOUTS, help="the layout of DST")
    c.add_argument("--text-encoder", default=None, metavar="NAME_OR_DIR",
                   help="--to transformers: where to read the text encoder the model names (e.g. a local copy of "
                        "t5-base); default: the name in its config, through the Hugging Face cache")
    c.add_argument("--quiet", action="store_true", help="print nothing on success")
    c.set_defaults(func=convert_command)


def convert_command(args: argparse.Namespace) -> int:
    out = convert(args.src, args.dst, args.to, text_encoder=args.text_encoder)
    if not args.quiet:
        print(f"converted {args.src} -> {out} ({args.to} layout)")
    return 0
