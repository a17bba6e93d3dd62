"""The `openmagnet` command line.

    openmagnet generate "happy rock" "80s synth pop" --model facebook/magnet-small-10secs --out out/
    openmagnet data index AUDIO_DIR --out MANIFEST_DIR
    openmagnet train --data MANIFEST_DIR --out RUN_DIR --preset magnet_32khz --model-scale small
    openmagnet export RUN_DIR --out MODEL_DIR
    openmagnet convert --to transformers facebook/magnet-small-10secs MODEL_DIR

Settings left unset take the values the audiocraft demos recommend for the loaded model (they
differ from the API defaults): span arrangement 'stride1', 20 first-codebook steps per 10 s of
audio, and for the sound models temperature 3.5, top-p 0.8, max CFG 20.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import sys
import typing as tp
import warnings
from pathlib import Path

from .config import DEFAULT_MODEL_HELP, FAST_MODE, RELEASED_DEFAULT
from .app.command import add_app_parser
from .convert.command import add_convert_parser
from .data.command import add_data_parser
from .evaluation.command import add_eval_parser
from .files import NO_SPACE, DiskFullError, check_out_dir, slug, unused_stem
from .train.codec.command import add_codec_parser
from .train.command import add_export_parser, add_train_parser

# The parsers above are argparse only. Each sub-command imports what it runs when it runs, so the CLI
# starts without torch (`--help` in a few hundredths of a second) and never loads the app or the solver.
# For tests that run commands as a user types them (tests/test_readme.py runs the README's): decoding steps for every
# generation, e.g. "2 1 1 1", in place of the model's or --steps' (a few steps instead of 50 make the same files).
TEST_STEPS_ENV = "OPENMAGNET_TEST_STEPS"


def default_model() -> str:
    """The model used without --model: the bundled demo model (offline, shipped in the package) when
    this copy has it, else the released small model (the app's first choice too)."""
    from .checkpoint import BUNDLED_MODELS, bundled_model_dir  # lazy: loads torch

    bundled = [name for name in BUNDLED_MODELS if bundled_model_dir(name) is not None]
    return bundled[0] if bundled else RELEASED_DEFAULT


LOCAL_MODEL = "a local model folder (--model DIR) holding state_dict.bin and compression_state_dict.bin"


def in_flags(message: str) -> str:
    """An API message in the command line's words: set_generation_params() names as their flags (FLAGS)."""
    for name, flag in FLAGS.items():
        message = re.sub(rf"(?<![\w-]){name}\b", flag, message)
    return message


def _check_flags(args: argparse.Namespace) -> None:
    """What `generate` and `edit` can check before torch is imported, in flags: the generation settings (as
    GenerationParams checks them), lengths in seconds, the files named, and the combinations --fast, --dtype,
    --quantize and --device refuse."""
    from .config import GenerationParams  # standard library only

    given = dict(top_k=getattr(args, "top_k", None), top_p=getattr(args, "top_p", None),
                 temperature=args.temperature, max_cfg_coef=args.max_cfg, min_cfg_coef=getattr(args, "min_cfg", None),
                 decoding_steps=decoding_steps(getattr(args, "steps", None)),
                 span_arrangement=getattr(args, "span_arrangement", None), remask_noise=args.remask_noise)
    try:
        GenerationParams(**{key: value for key, value in given.items() if value is not None})
    except ValueError as exc:
        raise ValueError(in_flags(str(exc))) from None
    for flag in ("duration", "extend_stride", "crossfade"):
        value = getattr(args, flag, None)
        if value is not None and not (math.isfinite(value) and value > (0 if flag != "crossfade" else -1e-12)):
            raise ValueError(f"--{flag.replace('_', '-')} must be a {'positive ' * (flag != 'crossfade')}number of "
                             f"seconds{' (0 or more)' * (flag == 'crossfade')}, got {value:g}")
    audio = getattr(args, "prompt_audio", None)
    if audio is not None and not Path(audio).expanduser().is_file():
        raise ValueError(f"--prompt-audio {audio}: no such audio file")
    if getattr(args, "fast", False) and (getattr(args, "dtype", None) or getattr(args, "quantize", None)):
        raise ValueError("--fast chooses the dtype and the int8 mode for this machine: drop --dtype and --quantize, "
                         "or drop --fast")
    device = str(args.device or "")
    if getattr(args, "quantize", None) and device and not device.startswith("cpu"):
        raise ValueError(f"--quantize runs on the CPU only: drop it, or use --device cpu (not {device})")


def _check_model_name(name: tp.Optional[str]) -> None:
    """--model, before torch is imported: a mistyped folder, or a hub id while the hub cannot be reached and its
    cache does not hold it, is a one-line error in seconds (locate.model_name_problem)."""
    from .locate import model_name_problem  # standard library only

    problem = None if name is None else model_name_problem(name, LOCAL_MODEL)
    if problem is not None:
        raise ValueError(problem)


def _generate(args: argparse.Namespace) -> int:
    prompts = list(args.prompts)
    if args.prompts_file is not None:
        if prompts or args.prompt_audio is not None:
            raise ValueError("--prompts-file gives the prompts: drop the text prompts and --prompt-audio")
        if not Path(args.prompts_file).expanduser().is_file():
            raise ValueError(f"--prompts-file {args.prompts_file}: no such file")
    elif not prompts and args.prompt_audio is None:
        raise ValueError('give at least one text prompt, e.g. openmagnet generate "happy rock"')
    if any(not p.strip() for p in prompts):
        raise ValueError("a text prompt is empty: remove it or write a description")
    if args.loop and args.prompt_audio is not None:
        raise ValueError("--loop makes a clip from nothing: drop --prompt-audio (or --loop)")
    if args.fast_recheck and not args.fast:
        raise ValueError("--fast-recheck times the kernels of --fast again: add --fast")
    _check_flags(args)
    _check_model_name(args.model)
    lines = None
    if args.prompts_file is not None:
        from .request import read_prompts_file  # lazy: loads torch

        lines = read_prompts_file(args.prompts_file)
    discard = check_out_dir(args.out)  # before any model loads: a bad --out fails now, not after the work
    try:
        return _run_generate(args, prompts) if lines is None else _run_prompts_file(args, lines)
    except BaseException:
        discard()  # the folders it created, while still empty
        raise


def _run_generate(args: argparse.Namespace, prompts: tp.List[str]) -> int:
    import torch

    from .audio import audio_write  # lazy: loads torch
    from .request import run

    model = _load(args)
    if args.loop and args.duration is not None and args.duration > model.max_duration:
        raise ValueError(f"--loop makes one window at most: give --duration {model.max_duration:g} or less (or leave "
                         f"it out)")
    if args.seed is not None:
        torch.manual_seed(args.seed)
    with Progress("decoding", args.quiet) as bar:
        request = generate_request(args, prompts, settings(model, args), bar)
        wavs = run(model, request).audio
    descriptions = request.prompts
    out = Path(args.out).expanduser()
    for i, (text, wav) in enumerate(zip(descriptions, wavs, strict=True)):
        stem = _out_stem(out / slug(text, i), args)
        path = audio_write(stem, wav.cpu(), model.sample_rate, format=args.format,
                           strategy=args.strategy, loudness_compressor=args.strategy == "loudness")
        print(path)
    return 0


def _load(args: argparse.Namespace) -> tp.Any:
    """The model of `generate`, as --device, --dtype, --quantize, --fast and --compile ask (said on stderr)."""
    import torch

    from .api import MAGNeT  # lazy: loads torch
    from .runtime import check_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = check_device(args.device, fix="use --device cpu, or leave --device out for the best available")
    _check_dtype(args.dtype, device)
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
    return model


def _run_prompts_file(args: argparse.Namespace, lines: tp.List[tp.Any]) -> int:
    """`generate --prompts-file`: one clip per prompt, named after its line (NN_words), each written once: a clip
    already in --out is skipped (a rerun resumes; --overwrite makes them again). Under torchrun (RANK, WORLD_SIZE)
    each process makes the prompts i with i % WORLD_SIZE == RANK."""
    from .audio import audio_write
    from .request import Request, launched_shard, run

    rank, world = launched_shard()
    model = _load(args)
    params = settings(model, args)
    out = Path(args.out).expanduser()
    for i, line in enumerate(lines):
        if i % world != rank:
            continue
        stem = out / slug(line.text, i)
        if not args.overwrite and Path(f"{stem}.{args.format}").exists():
            print(f"{stem}.{args.format}: already written, skipped", file=sys.stderr)
            continue
        duration = line.duration if line.duration is not None else args.duration
        if args.loop and duration is not None and duration > model.max_duration:
            raise ValueError(f"--loop makes one window at most: prompt {i + 1} asks for {duration:g} s "
                             f"(at most {model.max_duration:g})")
        negative = line.negative if line.negative is not None else args.negative
        with Progress(f"{i + 1}/{len(lines)}", args.quiet) as bar:
            request = Request(prompts=[line.text], negatives=None if negative is None else [negative],
                              mode="loop" if args.loop else "text", duration=duration,
                              extend_stride=args.extend_stride, seed=line.seed if line.seed is not None else args.seed,
                              params=params, progress=bar)
            wav = run(model, request).audio[0]
        print(audio_write(stem, wav.cpu(), model.sample_rate, format=args.format, strategy=args.strategy,
                          loudness_compressor=args.strategy == "loudness"))
    return 0


def settings(model: tp.Any, args: argparse.Namespace) -> dict:
    """The generation settings of `generate` / `edit` for `model`: each flag given, else the model's recommended
    value (its stored settings, or the audiocraft demos'), as set_generation_params() keywords."""
    given = dict(use_sampling=False if args.greedy else None, temperature=args.temperature,
                 max_cfg_coef=args.max_cfg, remask_noise=args.remask_noise,
                 decoding_steps=decoding_steps(getattr(args, "steps", None)))
    for flag, name in (("top_k", "top_k"), ("top_p", "top_p"), ("min_cfg", "min_cfg_coef"),
                       ("span_arrangement", "span_arrangement")):
        given[name] = getattr(args, flag, None)
    return {**model.recommended_params(**given), "speed": args.speed}


def generate_request(args: argparse.Namespace, prompts: tp.List[str], params: dict,
                     progress: tp.Optional[tp.Callable[[int, int], None]] = None):
    """The request `openmagnet generate` runs: text (or --loop), or the continuation of --prompt-audio."""
    from .audio import audio_read
    from .request import Request

    common = dict(duration=args.duration, extend_stride=args.extend_stride, seed=args.seed, params=params,
                  progress=progress)
    if args.prompt_audio is None:
        negatives = None if args.negative is None else [args.negative] * len(prompts)
        return Request(prompts=prompts, negatives=negatives, mode="loop" if args.loop else "text", **common)
    wav, sr = audio_read(args.prompt_audio, duration=args.prompt_seconds)
    batch = max(len(prompts), 1)
    negatives = None if args.negative is None else [args.negative] * batch
    return Request(prompts=prompts or [None], negatives=negatives, audio=wav[None].expand(batch, -1, -1),
                   audio_rate=sr, mode="continue", **common)


def _check_dtype(dtype: tp.Optional[str], device: tp.Any) -> None:
    """--dtype that this device runs slower than float32 (bf16 on a CPU without native bf16, fp16 on any CPU)."""
    if dtype is None:
        return
    from .runtime import fast_mode, parse_dtype
    from .hardware import slow_dtype_reason

    reason = slow_dtype_reason(device, parse_dtype(dtype))
    if reason is not None:
        raise ValueError(f"--dtype {dtype} on this {device.type.upper()} is a trap: {reason}: use --fast (here: "
                         f"{fast_mode(device)}) or leave --dtype out")


def _out_stem(stem: Path, args: argparse.Namespace) -> Path:
    """Where a clip goes: `stem`, or with --overwrite unset and a file there already, `stem-2`, `stem-3`, ..."""
    return stem if args.overwrite else unused_stem(stem, f".{args.format}")


def decoding_steps(given: tp.Optional[tp.List[int]]) -> tp.Optional[tp.List[int]]:
    """--steps, or the steps in $OPENMAGNET_TEST_STEPS when it is set (a test's shortcut, see TEST_STEPS_ENV)."""
    text = os.environ.get(TEST_STEPS_ENV, "").strip()
    if not text:
        return given
    steps = text.replace(",", " ").split()
    if len(steps) != 4 or not all(s.isdigit() and int(s) > 0 for s in steps):
        raise ValueError(f"{TEST_STEPS_ENV} must be 4 positive integers, e.g. '2 1 1 1'; got {text!r}")
    return [int(s) for s in steps]


class Progress:
    """The decoding steps as a tqdm bar, opened at the first step: an error before any step (a prompt too long, a
    bad setting) prints its line with no empty 0% bar above it. Pass it as the model's progress callback."""

    def __init__(self, desc: str, quiet: bool):
        self.desc, self.quiet, self.bar = desc, quiet, None

    def __call__(self, step: int, total: int) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=self.desc, unit="step", disable=self.quiet)
        self.bar.total = total  # a generation past the window adds windows
        self.bar.update(step - self.bar.n)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: tp.Any) -> None:
        if self.bar is not None:
            self.bar.close()


def _edit(args: argparse.Namespace) -> int:
    if not args.region:
        raise ValueError("give at least one region to regenerate: --region START_S END_S")
    if not Path(args.input).expanduser().is_file():
        raise ValueError(f"INPUT {args.input}: no such audio file")
    _check_flags(args)
    _check_model_name(args.model)
    discard = check_out_dir(args.out)
    try:
        return _run_edit(args)
    except BaseException:
        discard()
        raise


def _run_edit(args: argparse.Namespace) -> int:
    import torch

    from .api import MAGNeT  # lazy: loads torch
    from .audio import audio_read, audio_write  # lazy: loads torch
    from .request import run
    from .runtime import check_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = check_device(args.device, fix="use --device cpu, or leave --device out for the best available")
    model = MAGNeT.get_pretrained(args.model or default_model(), device=device)
    wav, sr = audio_read(args.input)
    with Progress("infill", args.quiet) as bar:
        out = run(model, edit_request(args, wav, sr, settings(model, args), bar)).audio
    stem = _out_stem(Path(args.out).expanduser() / (Path(args.input).stem + "_edit"), args)
    path = audio_write(stem, out[0].cpu(), model.sample_rate, format=args.format, strategy="peak")
    print(path)
    return 0


def edit_request(args: argparse.Namespace, wav: tp.Any, sample_rate: int, params: dict,
                 progress: tp.Optional[tp.Callable[[int, int], None]] = None):
    """The request `openmagnet edit` runs: the --region's of INPUT regenerated."""
    from .request import Request

    return Request(prompts=[args.prompt or None], negatives=None if args.negative is None else [args.negative],
                   audio=wav, audio_rate=sample_rate, mode="edit", regions=[tuple(r) for r in args.region],
                   crossfade=args.crossfade, seed=args.seed, params=params, progress=progress)


def build_parser() -> argparse.ArgumentParser:
    """The dispatcher: `generate` and `edit` here, every other sub-command's parser in its room's command.py."""
    parser = argparse.ArgumentParser(prog="openmagnet", description="MAGNeT text-to-music and text-to-sound.")
    sub = parser.add_subparsers(dest="command", required=True)
    add_generate_parser(sub)
    add_edit_parser(sub)
    add_app_parser(sub)
    add_data_parser(sub)
    add_train_parser(sub)
    add_export_parser(sub)
    add_eval_parser(sub)
    add_codec_parser(sub)
    add_convert_parser(sub)
    return parser


def add_generate_parser(sub: tp.Any) -> None:
    g = sub.add_parser("generate", help="generate audio from text prompts",
                       description="Generate one clip per text prompt (or continue --prompt-audio).")
    g.add_argument("prompts", nargs="*", help="text descriptions, one clip each")
    g.add_argument("--prompts-file", default=None, metavar="FILE",
                   help="prompts one a line (text, or JSON lines with \"text\" and optional \"seed\", \"duration\", "
                        "\"negative\"): one clip each, named after its line; clips already in --out are skipped "
                        "(a rerun resumes); under torchrun each process makes its share")
    g.add_argument("--model", default=None,
                   help=f"hub id, model directory or state_dict.bin (default {DEFAULT_MODEL_HELP}; "
                        "downloads on first use)")
    g.add_argument("--out", default="out", help="output directory (default ./out), checked before anything loads")
    g.add_argument("--overwrite", action="store_true",
                   help="replace clips of the same name in --out (default: a new name, NAME-2, NAME-3, ...)")
    g.add_argument("--seed", type=int, default=None, help="random seed for reproducible sampling")
    g.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    g.add_argument("--fast", action="store_true",
                   help=f"{FAST_MODE.replace('%', '%%')} (on most CPUs int8 feed-forward, on recent GPUs bf16; "
                        "README, Speed); the choice is printed")
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
    g.add_argument("--loop", action="store_true",
                   help="a clip that repeats without a seam (its wrap regenerated with both ends as context; one "
                        "window at most)")
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


def add_edit_parser(sub: tp.Any) -> None:
    e = sub.add_parser("edit", help="regenerate time regions of an audio file (infill)",
                       description="Regenerate the given regions of INPUT (at most the model's window long) with the "
                                   "rest as context on both sides, optionally guided by a text prompt.")
    e.add_argument("input", metavar="INPUT", help="audio file")
    e.add_argument("prompt", nargs="?", default=None, help="text description of the new material (optional)")
    e.add_argument("--region", type=float, nargs=2, action="append", metavar=("START_S", "END_S"), default=[],
                   help="a region to regenerate, in seconds (repeat for several)")
    e.add_argument("--out", default="out", help="output directory (default ./out), checked before anything loads")
    e.add_argument("--overwrite", action="store_true",
                   help="replace INPUT_edit in --out (default: a new name, INPUT_edit-2, ...)")
    e.add_argument("--crossfade", type=float, default=None, metavar="SECONDS",
                   help="keep the original audio outside the regions, cross-faded over this many seconds")
    e.add_argument("--negative", default=None, metavar="TEXT", help="what to steer away from")
    e.add_argument("--model", default=None,
                   help="hub id, local directory or state_dict.bin (default: the bundled demo)")
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


# set_generation_params() names as the generate and edit commands spell them, for messages that name a setting
FLAGS = {"remask_noise": "--remask-noise", "max_cfg_coef": "--max-cfg", "min_cfg_coef": "--min-cfg",
         "temperature": "--temperature", "top_p": "--top-p", "top_k": "--top-k", "decoding_steps": "--steps",
         "span_arrangement": "--span-arrangement"}


def _one_line(message: tp.Any, category: type, filename: str, lineno: int, line: tp.Optional[str] = None) -> str:
    """Warnings as the command line prints them: one line, no source excerpt, settings named by their flags."""
    describe = getattr(message, "describe", None)  # modes.SamplingCollapsed (not imported here: it loads torch)
    return f"openmagnet: warning: {describe(FLAGS) if callable(describe) else message}\n"


def parse_args(parser: argparse.ArgumentParser, argv: tp.Optional[tp.Sequence[str]] = None) -> argparse.Namespace:
    """parser.parse_args, except that the text prompts of `generate` and `edit` may also come after the options
    (`edit song.wav --region 3.0 5.5 "a drum fill"`): argparse takes the positionals before the first option only."""
    args, extras = parser.parse_known_args(argv)
    loose = [x for x in extras if not x.startswith("-")]
    if extras and len(loose) == len(extras):
        if args.command == "generate":
            args.prompts = [*args.prompts, *loose]
            extras = []
        elif args.command == "edit" and args.prompt is None and len(loose) == 1:
            args.prompt, extras = loose[0], []
    if extras:
        parser.error(f"unrecognized arguments: {' '.join(extras)}")
    return args


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    args = parse_args(build_parser(), argv)
    formatwarning, warnings.formatwarning = warnings.formatwarning, _one_line
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError, DiskFullError) as exc:
        print(f"openmagnet: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # FileExistsError, NotADirectoryError, PermissionError, a full disk, ...: one line
        if exc.errno is None:
            raise
        full = exc.errno in NO_SPACE
        where = (f" while writing {exc.filename}" if full else f": {exc.filename}") if exc.filename else ""
        fix = "free space or write elsewhere" if full else "check the path and its permissions"
        print(f"openmagnet: error: {os.strerror(exc.errno).lower()}{where}: {fix}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("openmagnet: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = formatwarning


if __name__ == "__main__":
    sys.exit(main())
