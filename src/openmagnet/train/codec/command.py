"""Command-line parsers of `openmagnet codec train | export | eval` (argparse only: importing this module
costs nothing; train/codec/trainer.py and train/codec/evaluate.py are imported when a command runs)."""
from __future__ import annotations

import argparse
import json
import typing as tp
from pathlib import Path


# the losses of the decoder's output, balanced (train/codec/trainer.py, CodecTrainConfig)
LOSSES = {"l1": "waveform L1 (default 1)", "mel": "multi-scale mel, L1 + log MSE (default 1)",
          "stft": "multi-resolution STFT, linear magnitudes (default 1)",
          "log_stft": "multi-resolution STFT, log magnitudes (default 1)",
          "adv": "adversarial hinge, with --adversarial (default 2)",
          "feat": "feature matching, with --adversarial (default 2)"}


def add_codec_parser(sub: tp.Any) -> None:
    c = sub.add_parser("codec", help="train, export and evaluate EnCodec codecs",
                       description="Train an EnCodec codec (SEANet + residual VQ, the released layout) on audio, "
                                   "export it as compression_state_dict.bin, measure it.")
    codec_sub = c.add_subparsers(dest="codec_command", required=True, metavar="{train,export,eval}")
    _add_train(codec_sub)
    e = codec_sub.add_parser("export", help="write a run's latest checkpoint as compression_state_dict.bin")
    e.add_argument("run", help="codec run folder, or one of its checkpoints/step_*.pt")
    e.add_argument("--out", required=True, help="file to write, or folder to write compression_state_dict.bin into")
    e.set_defaults(func=export_command)
    v = codec_sub.add_parser("eval", help="mel distance, SI-SDR, chroma correlation, frame-rate energy, pure-tone "
                                                 "pitch and codebook usage of a codec on a manifest")
    v.add_argument("codec", help="compression_state_dict.bin, a folder holding it, or a hub id")
    v.add_argument("--data", required=True, help="manifest folder (holds data.jsonl)")
    v.add_argument("--clips", type=int, default=16, help="random segments to code")
    v.add_argument("--seconds", type=float, default=5.0, help="length of each segment")
    v.add_argument("--seed", type=int, default=1234)
    v.set_defaults(func=eval_command)


def _add_train(codec_sub: tp.Any) -> None:
    t = codec_sub.add_parser("train", help="train a codec from scratch",
                             description="Train a codec on a manifest (`openmagnet data index`). Ctrl-C or a kill "
                                         "loses at most --save-every steps: --resume continues exactly.")
    t.add_argument("--data", help="manifest folder of the training audio")
    t.add_argument("--valid", help="manifest folder of held-out audio, measured at every checkpoint")
    t.add_argument("--out", required=True, help="run folder (run.json, checkpoints/, metrics.jsonl)")
    t.add_argument("--sample-rate", type=int, default=32000, choices=[32000, 16000])
    t.add_argument("--n-filters", type=int, default=32)
    t.add_argument("--dimension", type=int, default=128)
    t.add_argument("--lstm", type=int, default=2, help="LSTM layers in the encoder and decoder")
    t.add_argument("--n-q", type=int, default=4, help="codebooks")
    t.add_argument("--bins", type=int, default=2048, help="codes per codebook")
    t.add_argument("--steps", type=int, default=10_000)
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--segment-seconds", type=float, default=1.0)
    t.add_argument("--lr", type=float, default=3e-4)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--adversarial", action="store_true", help="add the multi-scale STFT discriminator")
    t.add_argument("--bypass-p", type=float, default=None,
                   help="probability per example that the decoder sees the unquantized latent (default 0; 0.5 "
                        "keeps the encoder's latents from collapsing onto few codes early in training)")
    t.add_argument("--tone-p", type=float, default=None,
                   help="probability per example of mixing in a pure tone, 55 Hz to 0.45 x the sample rate (default "
                        "0; music rarely holds strong high fundamentals, and a codec never shown them drops them)")
    t.add_argument("--tone-range", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                   help="Hz range of those tones, drawn log-uniform (default 55 and 0.45 x the sample rate)")
    t.add_argument("--init-from", default=None, metavar="CODEC",
                   help="start from the weights and codebooks of another codec of the same shape: a codec run "
                        "folder, one of its checkpoints or an exported compression_state_dict.bin (a new run: "
                        "fresh optimiser, no warm-up or k-means; for a second phase with other losses or data)")
    t.add_argument("--commit-weight", type=float, default=None, help="weight of the commitment loss (default 1)")
    weights = t.add_argument_group("loss weights", "With the balancer (default) each weight is that loss's share of "
                                   "the gradient at the decoder's output, whatever the loss's scale; 0 drops a loss")
    for name, what in LOSSES.items():
        weights.add_argument(f"--{name.replace('_', '-')}-weight", type=float, default=None, dest=f"w_{name}",
                             metavar="W", help=what)
    weights.add_argument("--no-balance", action="store_true",
                         help="plain weighted sum of the losses instead of the balancer")
    t.add_argument("--quantize-after", type=int, default=None,
                   help="autoencoder warm-up steps without the quantizer; the codebooks are then k-means "
                        "initialised on the warmed-up latents (default 0). Recommended from scratch: 1000 (with "
                        "--bypass-p 0.5); without it the first codebook collapses onto a few codes")
    t.add_argument("--save-every", type=int, default=500)
    t.add_argument("--log-every", type=int, default=10)
    t.add_argument("--num-workers", type=int, default=0, help="data loading processes")
    t.add_argument("--device", default=None, help="cpu or cuda (default cpu)")
    t.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (1 is often fastest on a small, busy machine)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=train_command)


def train_command(args: argparse.Namespace) -> int:
    from .trainer import codec_config, train_codec  # lazy: loads torch

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    cfg = codec_config(args.sample_rate, args.n_filters, args.dimension, args.lstm, args.n_q, args.bins)
    given = [("bypass_p", args.bypass_p), ("tone_p", args.tone_p), ("w_commit", args.commit_weight),
             ("quantize_after", args.quantize_after), ("tone_range", args.tone_range),
             ("init_from", args.init_from and str(Path(args.init_from).resolve())),
             *((f"w_{name}", getattr(args, f"w_{name}")) for name in LOSSES)]
    extra = {k: v for k, v in given if v is not None}
    if args.no_balance:
        extra["balance"] = False
    last = train_codec(args.data, args.out, cfg=cfg, steps=args.steps, batch_size=args.batch_size,
                       segment_seconds=args.segment_seconds, lr=args.lr, seed=args.seed, adversarial=args.adversarial,
                       valid_manifest=args.valid, resume=args.resume, progress=not args.quiet, device=args.device,
                       save_every=args.save_every, log_every=args.log_every, num_workers=args.num_workers, **extra)
    if "loss" not in last:  # a resumed run that had already reached --steps
        print(f"{args.out} is already trained to step {last['step']} (--steps {args.steps}): nothing to do (pass "
              f"--resume --steps N with a larger N to train further)")
        return 0
    print(f"trained to step {last['step']}; last loss {round(last['loss'], 4)}; run folder "
          f"{args.out} (export it with `openmagnet codec export {args.out} --out MODEL_DIR`)")
    return 0


def export_command(args: argparse.Namespace) -> int:
    from .trainer import export_codec  # lazy: loads torch

    print(export_codec(args.run, args.out))
    return 0


def eval_command(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_codec  # lazy: loads torch

    print(json.dumps(evaluate_codec(args.codec, args.data, n_clips=args.clips, seconds=args.seconds,
                                    seed=args.seed), indent=2))
    return 0
