"""Run under torchrun by tests/train/test_distributed.py: a few training steps on 2 CPU processes (gloo), then each
rank saves its model weights so that the test can check they stayed identical, and the main one the
EMA weights, before and after the run is resumed from its checkpoint."""
import json
import sys

import torch

from openmagnet.train import distributed
from openmagnet.train.presets import preset_config
from openmagnet.train.solver import Solver

manifest, out, settings = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
torch.set_num_threads(1)
solver = Solver(preset_config("magnet_32khz", **settings), manifest, out, progress=False)
initial = {k: v.clone() for k, v in solver.full_state().items()}
solver.run()
state = solver.full_state()
if settings.get("fsdp"):
    # FSDP: the full state is gathered on rank 0; also save each rank's own shard sizes
    state = state if distributed.is_main() else {}
ema = solver.ema_state()  # collective under FSDP
resumed = Solver(None, manifest, out, resume=True, progress=False)
resumed_ema = resumed.ema_state()
torch.save({"initial": initial, "final": state, "rank": distributed.rank(), "world": distributed.world_size(),
            "ema": ema, "resumed_ema": resumed_ema}, f"{out}/rank{distributed.rank()}.pt")
distributed.shutdown()
