#!/usr/bin/env python
"""Write a medium-architecture (1.84 B parameters) LM checkpoint in the released layout, from the
small one, for memory measurements: same `xp.cfg` with the medium transformer (dim 1536, 24 heads,
48 layers), random fp16 `best_state`, and the small checkpoint's codec and T5 cache linked.

    .venv/bin/python bench/fabricate_medium.py --small bench/cache/small10 --out bench/cache/medium10
"""
import argparse
import os
import re
from pathlib import Path

import torch

from openmagnet.config import LM_PRESETS, LMConfig
from openmagnet.lm import MagnetLM

p = argparse.ArgumentParser()
p.add_argument("--small", required=True)
p.add_argument("--out", required=True)
a = p.parse_args()
small, out = Path(a.small), Path(a.out)
out.mkdir(parents=True, exist_ok=True)
pkg = torch.load(small / "state_dict.bin", mmap=True, weights_only=True)
preset = LM_PRESETS["medium"]
cfg = pkg["xp.cfg"]
for key in ("dim", "num_heads", "num_layers"):
    cfg = re.sub(rf"(?m)^(  {key}:) \d+$", rf"\1 {preset[key]}", cfg)
text_dim = pkg["best_state"]["condition_provider.conditioners.description.output_proj.weight"].shape[1]
with torch.device("meta"):
    lm = MagnetLM(LMConfig(**preset, text_dim=text_dim))
g = torch.Generator().manual_seed(0)
state = {k: (torch.randn(v.shape, generator=g, dtype=torch.float32) * 0.02).half() for k, v in lm.state_dict().items()}
print(f"{sum(v.numel() for v in state.values()):,} parameters")
tmp = out / "state_dict.bin.tmp"
torch.save({"xp.cfg": cfg, "best_state": state, "version": pkg["version"], "exported": True}, tmp)
os.replace(tmp, out / "state_dict.bin")
for name in ("compression_state_dict.bin", "hf_cache"):
    if not (out / name).exists():
        os.symlink((small / name).resolve(), out / name)
