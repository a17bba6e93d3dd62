"""The `openmagnet` command line.

    openmagnet generate "happy rock" "80s synth pop" --model facebook/magnet-small-10secs --out out/
    openmagnet data index AUDIO_DIR --out MANIFEST_DIR
    openmagnet train --data MANIFEST_DIR --out RUN_DIR --preset magnet_32khz --model-scale small
    openmagnet export RUN_DIR --out MODEL_DIR

Settings left unset take the values the audiocraft demos recommend for the loaded model (they
differ from the API defaults): span arrangement 'stride1', 20 first-codebook steps per 10 s of
audio, and for the sound models temperature 3.5, top-p 0.8, max CFG 20.
"""
from __future__ import annotations

import argparse
import os
import sys
import typing as tp
import warnings
from pathlib import Path

from .evaluation.command import add_eval_parser
from .files import NO_SPACE, DiskFullError, slug
from .train.codec.command import add_codec_parser
from .train.command import add_export_parser, add_train_parser

# The parsers above are argparse only. Each sub-command imports what it runs when it runs, so the CLI
# starts without torch (`--help` in a few hundredths of a second) and never loads the app or the solver.
RELEASED_DEFAULT = "facebook/magnet-small-10secs"
DEFAULT_MODEL_HELP = f"the bundled openmagnet/demo when this copy has it, else {RELEASED_DEFAULT}"


def default_model() -> str:
    """The model used without --model: the bundled demo model (offline, shipped in the package) when
    this copy has it, else the released small model (the app's first choice too)."""
    from .checkpoint import BUNDLED_MODELS, bundled_model_dir  # lazy: loads torch

    bundled = [name for name in BUNDLED_MODELS if bundled_model_dir(name) is not None]
    return bundled[0] if bundled else RELEASED_DEFAULT


def _generate(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from .api import MAGNeT, check_device  # lazy: loads torch
    from .audio import audio_read, audio_write  # lazy: loads torch

    if args.threads:
        torch.set_num_threads(args.threads)
    prompts = list(args.prompts)
    if not prompts and args.prompt_audio is None:
        raise ValueError('give at least one text prompt, e.g. openmagnet generate "happy rock"')
    if any(not p.strip() for p in prompts):
        raise ValueError("a text prompt is empty: remove it or write a description")
    if args.fast_recheck and not args.fast:
        raise ValueError("--fast-recheck times the kernels of --fast again: add --fast")
    device = check_device(args.device, fix="use --device cpu, or leave --device out for the best available")
    exact = args.dtype == "float32" or args.dtype is None and device.type != "cuda"
    if args.compile and exact and not (args.fast or args.quantize):
        raise ValueError("--compile changes the float arithmetic, and the exact mode stays uncompiled: add --fast "
                         "(or --dtype / --quantize)")
    model = MAGNeT.get_pretrained(args.model or default_model(), device=device, dtype=args.dtype,
                                  quantize=args.quantize, fast=args.fast, fast_recheck=args.fast_recheck,
                                  compile=args.compile)
    if not args.quiet:
        print(f"{model.name} on {model.device}: {model.mode}", file=sys.stderr)
        if model.fast_mode is not None:
            print(f"fast mode: {model.fast_mode.why}", file=sys.stderr)
    model.set_generation_params(**model.recommended_params(
        use_sampling=False if args.greedy else None, top_k=args.top_k,
        top_p=args.top_p, temperature=args.temperature, max_cfg_coef=args.max_cfg, min_cfg_coef=args.min_cfg,
        decoding_steps=args.steps, span_arrangement=args.span_arrangement, remask_noise=args.remask_noise),
        speed=args.speed)
    generator = None
    if args.seed is not None:
        torch.manual_seed(args.seed)
        generator = torch.Generator(device=model.device).manual_seed(args.seed)
    if args.duration is not None:
        model.duration = args.duration
    if args.extend_stride is not None:
        model.extend_stride = args.extend_stride
    total = model.params.total_steps
    with tqdm(total=total, desc="decoding", unit="step", disable=args.quiet) as bar:
        model.set_custom_progress_callback(lambda step, all_steps: _advance(bar, step, all_steps))
        if args.prompt_audio is not None:
            wav, sr = audio_read(args.prompt_audio, duration=args.prompt_seconds)
            batch = max(len(prompts), 1)
            descriptions = prompts or [None]
            negatives = None if args.negative is None else [args.negative] * batch
            wavs = model.generate_continuation(wav[None].expand(batch, -1, -1), sr, descriptions,
                                               progress=True, generator=generator, negative_descriptions=negatives)
        else:
            descriptions = prompts
            negatives = None if args.negative is None else [args.negative] * len(prompts)
            wavs = model.generate(descriptions, progress=True, generator=generator, negative_descriptions=negatives)
    out = Path(args.out)
    for i, (text, wav) in enumerate(zip(descriptions, wavs, strict=True)):
        path = audio_write(out / slug(text, i), wav.cpu(), model.sample_rate, format=args.format,
                           strategy=args.strategy, loudness_compressor=args.strategy == "loudness")
        print(path)
    return 0


def _advance(bar, step: int, total: int) -> None:
    bar.total = total  # a generation past the window adds windows
    bar.update(step - bar.n)


def _edit(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from .api import MAGNeT, check_device  # lazy: loads torch
    from .audio import audio_read, audio_write  # lazy: loads torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.region:
        raise ValueError("give at least one region to regenerate: --region START_S END_S")
    device = check_device(args.device, fix="use --device cpu, or leave --device out for the best available")
    model = MAGNeT.get_pretrained(args.model or default_model(), device=device)
    model.set_generation_params(**model.recommended_params(
        use_sampling=False if args.greedy else None, temperature=args.temperature, max_cfg_coef=args.max_cfg,
        remask_noise=args.remask_noise), speed=args.speed)
    generator = None
    if args.seed is not None:
        generator = torch.Generator(device=model.device).manual_seed(args.seed)
    wav, sr = audio_read(args.input)
    description = args.prompt or None
    negatives = None if args.negative is None else [args.negative]
    with tqdm(total=model.params.total_steps, desc="infill", unit="step", disable=args.quiet) as bar:
        model.set_custom_progress_callback(lambda step, all_steps: _advance(bar, step, all_steps))
        out = model.generate_infill(wav, sr, [tuple(r) for r in args.region], [description], progress=True,
                                    generator=generator, negative_descriptions=negatives, crossfade=args.crossfade)
    stem = Path(args.input).stem + "_edit"
    path = audio_write(Path(args.out) / stem, out[0].cpu(), model.sample_rate, format=args.format, strategy="peak")
    print(path)
    return 0


def _app(args: argparse.Namespace) -> int:
    from .app import serve  # lazy: the web app (gradio)
    from .app.security import parse_login, read_auth_file

    logins = [parse_login(value) for value in args.auth]
    if args.auth_file:
        logins += read_auth_file(args.auth_file)
    serve(host=args.host, port=args.port, share=args.share or args.share_unsafe, model=args.model, out_dir=args.out,
          threads=args.threads, auth=logins, share_unsafe=args.share_unsafe, model_dirs=args.model_dir,
          allow_any_model=args.allow_any_model, max_upload_mb=args.max_upload_mb,
          max_upload_seconds=args.max_upload_seconds)
    return 0


def _data_index(args: argparse.Namespace) -> int:
    import warnings

    from .data import index_audio_dir  # lazy: loads torch

    with warnings.catch_warnings():  # each skipped file is printed below
        warnings.simplefilter("ignore")
        result = index_audio_dir(args.audio_dir, args.out, info_dir=args.info_dir)
    print(f"indexed {result.indexed} files ({len(result.skipped)} skipped) -> {result.path}")
    for path, reason in result.skipped:
        print(f"skipped {path}: {reason}")
    return 0


def _data_synth(args: argparse.Namespace) -> int:
    import time

    from .data.synth import synthesize_dataset  # lazy: loads torch

    _clip_seconds(args.clip_seconds)
    started = time.time()
    r = synthesize_dataset(args.out, args.hours, args.seed, sample_rate=args.sample_rate,
                           clip_seconds=tuple(args.clip_seconds), workers=args.workers, holdout=args.holdout,
                           soundfont=args.soundfont, renderer=args.renderer, tempo=args.tempo,
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
    s.add_argument("--tempo", default="style", choices=["style", "wide"],
                   help="style: each genre's own tempo range (default); wide: 60-180 bpm for every genre, so "
                        "that tempo varies apart from the genre (a model then learns it from the text)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_data_synth)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="openmagnet", description="MAGNeT text-to-music and text-to-sound.")
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="generate audio from text prompts",
                       description="Generate one clip per text prompt (or continue --prompt-audio).")
    g.add_argument("prompts", nargs="*", help="text descriptions, one clip each")
    g.add_argument("--model", default=None,
                   help=f"hub id, model directory or state_dict.bin (default {DEFAULT_MODEL_HELP}; "
                        "downloads on first use)")
    g.add_argument("--out", default="out", help="output directory (default ./out)")
    g.add_argument("--seed", type=int, default=None, help="random seed for reproducible sampling")
    g.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    g.add_argument("--fast", action="store_true",
                   help="the fastest mode that stays close to exact on this machine: on CPU the candidate kernels "
                        "(float32, bf16 where native, each int8 engine) are timed on the model's shapes the first "
                        "time and the choice is cached; it is printed")
    g.add_argument("--fast-recheck", action="store_true",
                   help="with --fast: time the kernels again instead of using the cached choice")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the transformer for fixed shapes (with --fast, --dtype or --quantize; the "
                        "first generation pays tens of seconds of compiling; CUDA graphs on CUDA)")
    g.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="LM matrices' dtype (default float32 on CPU/MPS: exact; bfloat16 on CUDA where native, "
                        "else float16); bfloat16 on a CPU without native bf16 and float16 on CPU are refused")
    g.add_argument("--quantize", default=None, choices=["int8", "int8-hybrid", "int8-all"],
                   help="int8 LM matrices on CPU (int8: feed-forward only; int8-hybrid: and the attention for "
                        "codebook 0; int8-all: every matrix): "
                        "the fastest CPU modes, approximate (see README, Speed)")
    g.add_argument("--steps", type=int, nargs=4, default=None, metavar="N",
                   help="decoding steps per codebook (default 20 10 10 10 per 10 s)")
    g.add_argument("--span-arrangement", choices=["stride1", "nonoverlap"], default=None)
    g.add_argument("--temperature", type=float, default=None)
    g.add_argument("--top-k", type=int, default=None)
    g.add_argument("--top-p", type=float, default=None)
    g.add_argument("--max-cfg", type=float, default=None, help="CFG coefficient at the start of each stage")
    g.add_argument("--remask-noise", type=float, default=None,
                   help="Gumbel noise on the re-masking confidence (ours; 0 = the reference's sampler; about 3 "
                        "keeps a small model from collapsing into one code)")
    g.add_argument("--min-cfg", type=float, default=None, help="CFG coefficient at the end of each stage")
    g.add_argument("--speed", default=None, choices=["turbo"],
                   help="decoding that does less work: turbo runs about half the forward passes (the guidance's "
                        "null rows every 3rd step, half the steps for codebooks 2-4); default: the reference's")
    g.add_argument("--greedy", action="store_true", help="argmax decoding instead of sampling")
    g.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                   help="length to generate (default: the model's window); longer is made in overlapping windows")
    g.add_argument("--extend-stride", type=float, default=None, metavar="SECONDS",
                   help="past the window, how far each new window moves on (default: half the window)")
    g.add_argument("--negative", default=None, metavar="TEXT",
                   help="what to steer away from (replaces the empty prompt of classifier-free guidance)")
    g.add_argument("--prompt-audio", default=None, help="audio file to continue")
    g.add_argument("--prompt-seconds", type=float, default=-1.0, help="use only the first N s of --prompt-audio")
    g.add_argument("--format", default="wav", choices=["wav", "flac", "mp3", "ogg"])
    g.add_argument("--strategy", default="loudness", choices=["loudness", "peak", "rms", "clip"],
                   help="output normalisation (default: loudness, -14 LUFS with soft clipping)")
    g.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.set_defaults(func=_generate)
    e = sub.add_parser("edit", help="regenerate time regions of an audio file (infill)",
                       description="Regenerate the given regions of INPUT (at most the model's window long) with the "
                                   "rest as context on both sides, optionally guided by a text prompt.")
    e.add_argument("input", metavar="INPUT", help="audio file")
    e.add_argument("prompt", nargs="?", default=None, help="text description of the new material (optional)")
    e.add_argument("--region", type=float, nargs=2, action="append", metavar=("START_S", "END_S"), default=[],
                   help="a region to regenerate, in seconds (repeat for several)")
    e.add_argument("--out", default="out", help="output directory (default ./out)")
    e.add_argument("--crossfade", type=float, default=None, metavar="SECONDS",
                   help="keep the original audio outside the regions, cross-faded over this many seconds")
    e.add_argument("--negative", default=None, metavar="TEXT", help="what to steer away from")
    e.add_argument("--model", default=None, help="hub id, local directory or state_dict.bin (default: the bundled demo)")
    e.add_argument("--seed", type=int, default=None)
    e.add_argument("--device", default=None)
    e.add_argument("--temperature", type=float, default=None)
    e.add_argument("--max-cfg", type=float, default=None)
    e.add_argument("--remask-noise", type=float, default=None)
    e.add_argument("--speed", default=None, choices=["turbo"], help="decoding that does less work (see generate)")
    e.add_argument("--greedy", action="store_true")
    e.add_argument("--format", default="wav", choices=["wav", "flac", "mp3", "ogg"])
    e.add_argument("--threads", type=int, default=None)
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(func=_edit)

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
    add_data_parser(sub)
    add_train_parser(sub)
    add_export_parser(sub)
    add_eval_parser(sub)
    add_codec_parser(sub)
    return parser


def _one_line(message: tp.Any, category: type, filename: str, lineno: int, line: tp.Optional[str] = None) -> str:
    """Warnings as the command line prints them: one line, no source excerpt."""
    return f"openmagnet: warning: {message}\n"


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    formatwarning, warnings.formatwarning = warnings.formatwarning, _one_line
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError, DiskFullError) as exc:
        print(f"openmagnet: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in NO_SPACE:
            raise
        where = f" while writing {exc.filename}" if exc.filename else ""
        print(f"openmagnet: error: {os.strerror(exc.errno).lower()}{where}: free space or write elsewhere",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("openmagnet: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = formatwarning


if __name__ == "__main__":
    sys.exit(main())
