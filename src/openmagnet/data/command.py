"""Command-line parser of `openmagnet data` (argparse only: importing this module costs nothing; the indexer and
the synthesiser are imported when a command runs)."""
from __future__ import annotations

import argparse
import typing as tp

from .compose import DRUM_CHOICES, TEMPO_CHOICES  # standard library only


def _data_index(args: argparse.Namespace) -> int:
    import warnings

    from . import index_audio_dir  # lazy: loads torch

    with warnings.catch_warnings():  # each skipped file is printed below
        warnings.simplefilter("ignore")
        result = index_audio_dir(args.audio_dir, args.out, info_dir=args.info_dir)
    print(f"indexed {result.indexed} files ({len(result.skipped)} skipped) -> {result.path}")
    for path, reason in result.skipped:
        print(f"skipped {path}: {reason}")
    return 0


def _data_synth(args: argparse.Namespace) -> int:
    import time

    from .synth import synthesize_dataset  # lazy: loads torch

    _clip_seconds(args.clip_seconds)
    started = time.time()
    r = synthesize_dataset(args.out, args.hours, args.seed, sample_rate=args.sample_rate,
                           clip_seconds=tuple(args.clip_seconds), workers=args.workers, holdout=args.holdout,
                           soundfont=args.soundfont, renderer=args.renderer, tempo=args.tempo, drums=args.drums,
                           progress=not args.quiet)
    held = f"; holdout {r.holdout} clips ({r.holdout_seconds / 60:.1f} min) -> {r.holdout_manifest}" * bool(r.holdout)
    print(f"synth: {r.clips} clips, {r.seconds / 3600:.3f} h of audio ({r.rendered} rendered now, "
          f"{r.clips + r.holdout - r.rendered} already done) in {time.time() - started:.1f} s -> {r.manifest}{held}")
    return 0


def _clip_seconds(values: tp.List[float]) -> tp.List[float]:
    if len(values) > 2:
        raise ValueError(f"--clip-seconds takes one or two numbers (MIN [MAX]), got {len(values)}")
    return values


def add_data_parser(sub: tp.Any) -> None:
    """The `data` command group: `data index AUDIO_DIR --out MANIFEST_DIR [--info-dir DIR]` and
    `data synth --out DIR --hours H --seed S` (procedural captioned music, needs the `synth` extra)."""
    d = sub.add_parser("data", help="prepare training data", description="Prepare training data.")
    data_sub = d.add_subparsers(dest="data_command", required=True)
    i = data_sub.add_parser("index", help="index an audio folder into MANIFEST_DIR/data.jsonl",
                            description="Read the header of every audio file under AUDIO_DIR (recursively) and "
                                        "write the manifest MANIFEST_DIR/data.jsonl; unreadable files are skipped.")
    i.add_argument("audio_dir", metavar="AUDIO_DIR", help="folder of .wav, .flac, .ogg or .mp3 files")
    i.add_argument("--out", required=True, metavar="MANIFEST_DIR", help="folder to write data.jsonl into")
    i.add_argument("--info-dir", default=None, metavar="DIR",
                   help="folder mirroring AUDIO_DIR with the side-car <audio>.json files "
                        "(default: next to each audio file)")
    i.set_defaults(func=_data_index)
    s = data_sub.add_parser("synth", help="render a procedural, captioned General MIDI music dataset",
                            description="Compose random clips (style, key, tempo, 1-4 instruments), render them with "
                                        "FluidSynth and write DIR/audio/clip_*.wav + side-car JSON, DIR/data.jsonl and "
                                        "DIR/synth.json. Re-running with the same settings resumes.")
    s.add_argument("--out", required=True, metavar="DIR", help="dataset folder")
    s.add_argument("--hours", type=float, required=True, help="hours of training audio (sets the clip count)")
    s.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    s.add_argument("--sample-rate", type=int, default=32000, help="Hz (default 32000)")
    s.add_argument("--clip-seconds", type=float, nargs="+", default=[10.0, 12.0], metavar="S",
                   help="clip length, or MIN MAX for a uniform draw per clip (default 10 12)")
    s.add_argument("--workers", type=int, default=1, help="rendering processes (default 1; same output for any)")
    s.add_argument("--holdout", type=int, default=0, metavar="K",
                   help="also write K evaluation clips from another seed stream into DIR/holdout/")
    s.add_argument("--soundfont", default=None, help="General MIDI .sf2 (default: FluidR3_GM from fluid-soundfont-gm)")
    s.add_argument("--renderer", default="auto", choices=["auto", "pyfluidsynth", "cli"],
                   help="auto: pyfluidsynth if it loads, else the fluidsynth program")
    s.add_argument("--tempo", default="style", choices=TEMPO_CHOICES,
                   help="style: each genre's own tempo range (default); wide: 60-180 bpm for every genre, so "
                        "that tempo varies apart from the genre (a model then learns it from the text)")
    s.add_argument("--drums", default="style", choices=DRUM_CHOICES,
                   help="style: drums in some clips of the genres that have them (default); always: a drum part "
                        "in every clip (genres without drums get a plain backbeat), a steady beat to learn from")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_data_synth)
