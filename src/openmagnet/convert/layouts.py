"""Reading a model in any layout and writing it in another (`openmagnet convert`).

A transformers folder (config.json of model_type 'magnet', not openmagnet's own) is read by
openmagnet.transformers (MagnetForConditionalGeneration.from_pretrained, strict); anything else by
MAGNeT.get_pretrained (the released layout, openmagnet's, a training run's export, openmagnet/demo). Both give
openmagnet's MAGNeT in float32 on the CPU, whose weights are the files' exactly (fp16 LM values are exact in
float32), written back by MAGNeT.save_pretrained (audiocraft: the LM in fp16 again) or by
openmagnet.transformers.save_transformers. DST must not exist or be empty; it is written whole, beside itself,
then renamed.
"""
from __future__ import annotations

import json
import os
import typing as tp
from pathlib import Path

from ..files import check_new_folder, new_folder
from ..locate import quiet_progress_bars

LAYOUTS = ("transformers", "audiocraft", "openmagnet")  # what --to takes

PathLike = tp.Union[str, os.PathLike]


def convert(src: PathLike, dst: PathLike, to: str, text_encoder: tp.Optional[PathLike] = None) -> Path:
    """Write the model `src` into the new folder `dst` in layout `to` (transformers, audiocraft or openmagnet)."""
    with quiet_progress_bars():
        return _convert(src, dst, to, text_encoder)


def _convert(src: PathLike, dst: PathLike, to: str, text_encoder: tp.Optional[PathLike]) -> Path:
    if to not in LAYOUTS:
        raise ValueError(f"--to must be one of {', '.join(LAYOUTS)}; got {to!r}")
    out = Path(dst).expanduser()
    check_new_folder(out)  # before any loading
    if Path(src).expanduser().resolve() == out.resolve():
        raise ValueError("SRC and DST are the same folder: write the converted model into a new folder")
    if is_transformers_folder(src):
        if text_encoder is not None:
            raise ValueError("--text-encoder: a transformers folder holds its text encoder; drop the flag")
        import torch

        from transformers import AutoProcessor

        face = _face()
        model = face.MagnetForConditionalGeneration.from_pretrained(str(src), dtype=torch.float32)
        processor = AutoProcessor.from_pretrained(str(src))
        if to == "transformers":
            return face.save_folder(model, processor, out)
        magnet = model.to_magnet()
    else:
        from ..api import MAGNeT

        magnet = MAGNeT.get_pretrained(src, device="cpu", text_encoder=text_encoder)
        if to == "transformers":
            return _face().save_transformers(magnet, out)
        if text_encoder is not None:
            raise ValueError(f"--text-encoder is for --to transformers (the {to} layout names its text encoder)")
    with new_folder(out) as tmp:
        magnet.save_pretrained(tmp, layout="audiocraft" if to == "audiocraft" else "hf")
    return out


def is_transformers_folder(src: PathLike) -> bool:
    """True for a transformers MAGNeT: a local folder or hub repo whose config.json has model_type 'magnet' and is
    not openmagnet's own save_pretrained config."""
    folder = Path(src).expanduser()
    config = folder / "config.json"
    if not folder.is_dir():
        config = _hub_config(str(src))
    if config is None or not config.is_file():
        return False
    try:
        content = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(content, dict) and content.get("model_type") == "magnet" and \
        content.get("library_name") != "openmagnet"


def _hub_config(name: str) -> tp.Optional[Path]:
    """The config.json of hub repo `name` (through the Hugging Face cache), or None: not a hub id, no such file,
    offline without it (MAGNeT.get_pretrained then says what is wrong)."""
    from ..checkpoint import hub_file
    from ..locate import is_path_like

    if is_path_like(name) or Path(name).expanduser().exists():
        return None
    try:
        return hub_file(name, "config.json")
    except Exception:  # not a hub id (CheckpointError), not in the repo, offline, network
        return None


def _face():
    """openmagnet.transformers, or a ValueError (one line) where the installed transformers cannot run it."""
    try:
        from .. import transformers as face
    except ImportError as exc:
        raise ValueError(str(exc)) from None
    return face
