"""Command-line parsers of `openmagnet train` and `openmagnet export` (argparse only: importing this
module costs nothing; the solver is imported when a command runs)."""
from __future__ import annotations

import argparse
import typing as tp
from pathlib import Path

from ..config import parse_generation_setting
from .presets import parse_override, preset_config


def add_train_parser(sub: tp.Any) -> None:
    t = sub.add_parser("train", help="train or fine-tune a MAGNeT",
                       description="Train MAGNeT on a manifest (`openmagnet data index`), or fine-tune a "
                                   "released / exported model with --continue-from. Ctrl-C or a kill loses at "
                                   "most `save_every` steps: --resume continues exactly.")
    t.add_argument("--data", help="manifest folder of the training audio (holds data.jsonl)")
    t.add_argument("--valid", help="manifest folder of held-out audio (default: validate on --data)")
    t.add_argument("--out", required=True, help="run folder (checkpoints, metrics.jsonl, samples)")
    t.add_argument("--preset", default="magnet_32khz", help="magnet_32khz (music) or audio_magnet_16khz (sound)")
    t.add_argument("--model-scale", default=None, help="tiny, small, medium or large (default small)")
    t.add_argument("--codec", default=None, help="hub id or path of the frozen codec (default: the preset's)")
    t.add_argument("--text-encoder", default=None, help="T5 hub id or local folder (default: the preset's)")
    t.add_argument("--continue-from", default=None,
                   help="fine-tune: hub id, exported model folder, run folder or run checkpoint; the architecture, "
                        "codec and text encoder come from it")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    t.add_argument("--max-steps", type=int, default=None)
    t.add_argument("--batch-size", type=int, default=None, help="global batch size (split over processes)")
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--segment-duration", type=float, default=None, help="seconds per example (new models)")
    t.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default=None,
                   help="autocast dtype (auto: fp16 on CUDA as released; on CPU bf16 where the CPU has native "
                        "bf16, else fp32; bf16 is refused on a CPU without it, fp16 on any CPU)")
    t.add_argument("--lora-rank", type=int, default=None, help="fine-tune LoRA adapters of this rank only")
    t.add_argument("--fsdp", action="store_true", help="shard the model with FSDP (under torchrun)")
    t.add_argument("--num-workers", type=int, default=None, help="data loading processes")
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--device", default=None,
                   help="cpu, cuda or cuda:N (default: cuda if available; under torchrun each process takes "
                        "the GPU of its LOCAL_RANK)")
    t.add_argument("--external-metadata", default=None, help="folder of sound side-car JSON files")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any training setting, e.g. --set warmup=100 --set valid_every=500 (repeatable)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=train_command)


def train_command(args: argparse.Namespace) -> int:
    from .solver import Solver  # lazy: loads torch and the data stack

    flags = dict(model_scale=args.model_scale, codec=args.codec, text_encoder=args.text_encoder,
                 max_steps=args.max_steps, batch_size=args.batch_size, lr=args.lr,
                 segment_duration=args.segment_duration, precision=args.precision, lora_rank=args.lora_rank,
                 num_workers=args.num_workers, seed=args.seed, fsdp=args.fsdp or None)
    overrides = {k: v for k, v in flags.items() if v is not None}
    overrides.update(parse_override(item) for item in args.set)
    cfg = None if args.resume else preset_config(args.preset, **overrides)
    solver = Solver(cfg, args.data, args.out, valid=args.valid, continue_from=args.continue_from,
                    resume=args.resume, resume_overrides=overrides if args.resume else None,
                    device=args.device, progress=not args.quiet, external_metadata=args.external_metadata)
    last = solver.run()
    if solver.main and not last:
        print(f"{args.out} is already trained to step {solver.step} (max_steps {solver.cfg.max_steps}): nothing "
              f"to do (pass --resume --max-steps N with a larger N to train further)")
    elif solver.main:
        ce = last.get("valid_ce", last.get("ce"))
        print(f"trained to step {solver.step}; last {'valid ' if 'valid_ce' in last else ''}ce {ce:.4f}; "
              f"run folder {args.out} (export it with `openmagnet export {args.out} --out MODEL_DIR`)")
    return 0


def add_export_parser(sub: tp.Any) -> None:
    e = sub.add_parser("export", help="export a training run as a loadable model",
                       description="Write state_dict.bin (fp16 best EMA weights + xp.cfg), "
                                   "compression_state_dict.bin and model.safetensors: loadable by "
                                   "MAGNeT.get_pretrained(MODEL_DIR) in openmagnet and in audiocraft.")
    e.add_argument("run", help="run folder, or one of its checkpoints/step_*.pt")
    e.add_argument("--out", required=True, help="model folder to write")
    e.add_argument("--overwrite", action="store_true", help="replace the model --out holds already (default: refuse)")
    e.add_argument("--bundle", action="store_true",
                   help="RUN is an exported model folder: write its safetensors-only form (model.safetensors + "
                        "compression.safetensors, fp16), as models ship inside the package")
    e.add_argument("--generation", action="append", default=[], metavar="KEY=VALUE",
                   help="a generation setting the model stores for itself and comes with (MAGNeT.get_pretrained, "
                        "the CLI and the app use it), e.g. --generation temperature=1.5 --generation "
                        "decoding_steps=20,10,10,10 (repeatable; set_generation_params() names)")
    e.set_defaults(func=export_command)


# the files of a model folder, in any of the layouts openmagnet writes
MODEL_FILES = ("state_dict.bin", "compression_state_dict.bin", "model.safetensors", "compression.safetensors",
               "compression_model.safetensors", "config.json")


def export_command(args: argparse.Namespace) -> int:
    generation = dict(parse_generation_setting(item) for item in args.generation) or None
    held = [name for name in MODEL_FILES if (Path(args.out).expanduser() / name).is_file()]
    if held and not args.overwrite:
        raise ValueError(f"--out {args.out} already holds a model ({', '.join(held)}): add --overwrite to replace it, "
                         f"or name another folder")
    if args.bundle:
        from .export import bundle_model  # lazy: loads torch

        path = bundle_model(args.run, args.out, generation)
    else:
        from .runs import export_run  # lazy: loads torch

        path = export_run(args.run, args.out, generation)
    print(f"exported {args.run} -> {path}")
    return 0
