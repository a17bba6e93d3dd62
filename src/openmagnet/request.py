"""One generation request, and the one path from a face (the Python API, the command line, the app, model
evaluation) to a generation mode: `run(model, request)`.

A request carries everything one generation needs: the prompts, the negatives, the audio to continue or edit
and its rate, the mode (text, continue, edit, loop), the regions, the cross-fade, the duration, the seed, the
per-call generation settings (set_generation_params() keywords over the model's stored ones) and the progress
callback. `run` validates it once (GenerationParams and the request's own checks), never changes the model's
stored settings, and returns the audio, the tokens and the settings it used: a shared model serves requests
with different settings safely.
"""
from __future__ import annotations

import dataclasses
import math
import os
import typing as tp

import torch

from . import modes
from .audio import convert_audio, crossfade_regions, remove_dc
from .conditioners import check_descriptions, check_negatives, per_item_descriptions
from .config import GenerationParams, generation_params
from .runtime import check_generator, seeded_generator

MODES = ("text", "continue", "edit", "loop")
Progress = tp.Callable[[int, int], None]


@dataclasses.dataclass(frozen=True)
class Request:
    """What to generate. prompts: one text (or None) per clip; for 'continue' and 'edit' one per audio item (None:
    no text). negatives: one text (or None) per prompt, what to steer away from. audio [C, T] or [B, C, T] at
    audio_rate Hz: the prompt to continue, or the clip to edit. regions [(start_s, end_s)]: what 'edit'
    regenerates; crossfade: seconds of cross-fade back to the original outside them (None: the codec's audio).
    duration: seconds (None: the model's window; past it, overlapping windows moving on by extend_stride s).
    loop_seam: seconds regenerated around a loop's wrap. seed or generator (on the model's device): the random
    draws (neither: torch's global state). params: set_generation_params() keywords over the model's stored
    settings, or a whole GenerationParams. progress(step, total): after every decoding step."""
    prompts: tp.Optional[tp.Sequence[tp.Optional[str]]] = None
    negatives: tp.Optional[tp.Sequence[tp.Optional[str]]] = None
    audio: tp.Optional[torch.Tensor] = None
    audio_rate: tp.Optional[float] = None
    mode: str = "text"
    regions: tp.Sequence[tp.Tuple[float, float]] = ()
    crossfade: tp.Optional[float] = None
    duration: tp.Optional[float] = None
    extend_stride: tp.Optional[float] = None
    loop_seam: float = 1.0
    seed: tp.Optional[int] = None
    generator: tp.Optional[torch.Generator] = None
    params: tp.Union[GenerationParams, tp.Mapping[str, tp.Any], None] = None
    progress: tp.Optional[Progress] = None


@dataclasses.dataclass
class Result:
    audio: torch.Tensor  # [B, C, samples] float32 at the model's sample rate
    tokens: torch.Tensor  # [B, K, T]
    params: GenerationParams  # the settings this generation used


def settings(model: tp.Any, request: Request) -> GenerationParams:
    """The generation settings of a request on `model`: its params over the model's stored settings."""
    if isinstance(request.params, GenerationParams):
        return request.params
    return generation_params(model.params, **dict(request.params or {}))


def run(model: tp.Any, request: Request) -> Result:
    """Generate what `request` asks with `model` (a MAGNeT), without changing the model's stored settings."""
    if request.mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {request.mode!r}")
    params = settings(model, request)
    generator = _generator(model, request)  # checked before the codec's work on any audio
    steps = {"text": _text, "loop": _loop, "continue": _continue, "edit": _edit}[request.mode]
    return steps(model, request, params, generator)


def _generator(model: tp.Any, request: Request) -> tp.Optional[torch.Generator]:
    """The request's generator, or one seeded with its seed (None: torch's global state), checked for the model's
    device."""
    generator = request.generator if request.generator is not None else seeded_generator(request.seed, model.device)
    check_generator(generator, model.device)
    return generator


def _run(model: tp.Any, request: Request, params: GenerationParams, generator: tp.Optional[torch.Generator],
         mode: tp.Callable[..., torch.Tensor], *args: tp.Any) -> torch.Tensor:
    """Call a mode with a Run made now (the text encoder loads on first use, after every check), counting its
    forward passes on the model."""
    work = modes.Run(model.lm, model.conditioner, params, generator, request.progress)
    try:
        return mode(work, *args)
    finally:
        model.forward_passes += work.passes


def text_tokens(model: tp.Any, request: Request) -> torch.Tensor:
    """The tokens of a text request, not decoded (the benchmarks time the LM alone)."""
    if request.mode != "text":
        raise ValueError(f"text_tokens() runs mode 'text', got {request.mode!r}")
    generator = _generator(model, request)
    return _text_tokens(model, request, settings(model, request), generator)


def _text_tokens(model: tp.Any, request: Request, params: GenerationParams,
                 generator: tp.Optional[torch.Generator]) -> torch.Tensor:
    if request.audio is not None:
        raise ValueError("mode 'text' makes audio from text alone: use mode 'continue' or 'edit' for audio")
    descriptions = check_descriptions(request.prompts)
    negatives = check_negatives(request.negatives, len(descriptions))
    return _frames_mode(model, request, params, generator, descriptions, negatives, None)


def _text(model: tp.Any, request: Request, params: GenerationParams,
          generator: tp.Optional[torch.Generator]) -> Result:
    return _finish(model, _text_tokens(model, request, params, generator), params)


def _loop(model: tp.Any, request: Request, params: GenerationParams,
          generator: tp.Optional[torch.Generator]) -> Result:
    descriptions = check_descriptions(request.prompts)
    negatives = check_negatives(request.negatives, len(descriptions))
    duration = _duration(model, request)
    if duration > model.max_duration:
        raise ValueError(f"a loop is made in one window: set model.duration to at most {model.max_duration:g} s "
                         f"(it is {duration:g} s)")
    seam = request.loop_seam
    if isinstance(seam, bool) or not isinstance(seam, (int, float)) or \
            not 1 / model.frame_rate <= seam < duration:
        raise ValueError(f"loop_seam must be between one frame and the clip's length ({duration:g} s), "
                         f"got {seam!r}")
    frames = _frames(model, duration)
    tokens = _run(model, request, params, generator, modes.loop, descriptions, negatives, frames, seam,
                  model.frame_rate)
    audio = model.decode_loop(tokens)
    if params.remove_dc:
        audio = remove_dc(audio, model.sample_rate, periodic=True)  # one period of the loop: wrap unchanged
    return Result(audio, tokens, params)


def _continue(model: tp.Any, request: Request, params: GenerationParams,
              generator: tp.Optional[torch.Generator]) -> Result:
    prompt = prepare_audio(model, request.audio, request.audio_rate, "prompt", limit=_duration(model, request))
    descriptions = per_item_descriptions(request.prompts, prompt.shape[0], "prompts")
    prompt_tokens = encode(model, prompt)
    negatives = check_negatives(request.negatives, len(descriptions))
    tokens = _frames_mode(model, request, params, generator, descriptions, negatives, prompt_tokens)
    return _finish(model, tokens, params)


def _edit(model: tp.Any, request: Request, params: GenerationParams,
          generator: tp.Optional[torch.Generator]) -> Result:
    wav = prepare_audio(model, request.audio, request.audio_rate, "audio")
    seconds = wav.shape[-1] / model.sample_rate
    keep = modes.infill_keep(request.regions, seconds, model.frame_rate, model.cfg.span_len,
                             math.ceil(seconds * model.frame_rate))
    descriptions = per_item_descriptions(request.prompts, wav.shape[0], "clips")
    negatives = check_negatives(request.negatives, len(descriptions))
    crossfade = request.crossfade
    if crossfade is not None and not (isinstance(crossfade, (int, float)) and crossfade >= 0):
        raise ValueError(f"crossfade must be a number of seconds >= 0 (or None), got {crossfade!r}")
    tokens = _run(model, request, params, generator, modes.infill, descriptions, negatives, encode(model, wav), keep)
    out = model.generate_audio(tokens)[..., :wav.shape[-1]]
    if params.remove_dc:  # before the cross-fade: the original audio outside the regions stays as given
        out = remove_dc(out, model.sample_rate)
    if crossfade is not None:
        out = crossfade_regions(wav.to(out.device), out, request.regions, model.sample_rate, crossfade)
    return Result(out, tokens, params)


def _duration(model: tp.Any, request: Request) -> float:
    return model.max_duration if request.duration is None else request.duration


def _frames(model: tp.Any, duration: tp.Any) -> int:
    """The frames of `duration` seconds, or a one-line error for a duration that is not a positive length."""
    if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not math.isfinite(duration) \
            or duration <= 0:
        raise ValueError(f"duration must be a positive number of seconds, got {duration!r}: set "
                         f"model.duration (e.g. {model.max_duration:g}, or more for several windows)")
    frames = int(duration * model.frame_rate)  # generate_tokens refuses a prompt this long
    if frames < 1:
        raise ValueError(f"duration {duration:g} s is shorter than one frame ({1 / model.frame_rate:g} s)")
    return frames


def window_stride(model: tp.Any, extend_stride: tp.Optional[float]) -> int:
    """The frames each window past the first moves on by (extend_stride s; None: half the window)."""
    stride = model.max_duration / 2 if extend_stride is None else extend_stride
    if isinstance(stride, bool) or not isinstance(stride, (int, float)) or not 0 < stride < model.max_duration:
        raise ValueError(f"extend_stride must be between 0 and the window ({model.max_duration:g} s), exclusive, "
                         f"got {stride!r}")
    return int(stride * model.frame_rate)


def _frames_mode(model: tp.Any, request: Request, params: GenerationParams, generator: tp.Optional[torch.Generator],
                 descriptions: modes.Texts, negatives: tp.Optional[modes.Texts],
                 prompt: tp.Optional[torch.Tensor]) -> torch.Tensor:
    """Text or continuation: one window, or overlapping windows past it."""
    frames = _frames(model, _duration(model, request))
    window = int(model.max_duration * model.frame_rate)
    if frames <= window:
        return _run(model, request, params, generator, modes.text, descriptions, negatives, frames, prompt)
    stride = window_stride(model, request.extend_stride)
    return _run(model, request, params, generator, modes.long, descriptions, negatives, frames, window, stride,
                prompt)


def _finish(model: tp.Any, tokens: torch.Tensor, params: GenerationParams) -> Result:
    audio = model.generate_audio(tokens)
    if params.remove_dc:
        audio = remove_dc(audio, model.sample_rate)
    return Result(audio, tokens, params)


# ------------------------------------------------------------------------------------------ audio in
def encode(model: tp.Any, wav: torch.Tensor) -> torch.Tensor:
    """The codec's codes [B, K, T] of wav [B, C, T] (at the model's rate), on the LM's device."""
    with torch.inference_mode():
        codes = model.compression_model.encode(wav.to(model.codec_device))
    return (codes[0] if isinstance(codes, tuple) else codes).to(model.device)


def prepare_audio(model: tp.Any, audio: tp.Any, rate: tp.Any, what: str,
                  limit: tp.Optional[float] = None) -> torch.Tensor:
    """Audio [C, T] or [B, C, T] checked and converted to the model's rate and channels, on its device. A prompt
    must be shorter than the generated length (`limit` s); audio to edit may fill the whole window (limit None)."""
    if not isinstance(audio, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor shaped [C, T] or [B, C, T], got {type(audio).__name__}")
    if audio.dim() == 2:
        audio = audio[None]
    if audio.dim() != 3:
        raise ValueError(f"{what} must be shaped [C, T] or [B, C, T], got {list(audio.shape)}")
    if not audio.is_floating_point():
        raise TypeError(f"{what} must be floating point audio, got dtype {audio.dtype}; convert int16 PCM "
                        f"with wav.float() / 32768")
    rate_name = "prompt_sample_rate" if what == "prompt" else "sample_rate"
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 1 <= rate < math.inf:
        raise ValueError(f"{rate_name} must be a number of Hz, at least 1, got {rate!r}")
    if audio.shape[-1] == 0 or audio.shape[0] == 0:
        raise ValueError(f"the {what} is empty (shape {list(audio.shape)}): give at least one clip of one sample"
                         + (", or use generate()" if what == "prompt" else ""))
    seconds = audio.shape[-1] / rate
    if limit is None:
        window = model.max_duration
        if seconds * model.frame_rate > int(window * model.frame_rate):
            raise ValueError(f"the {what} is {seconds:.2f} s long but this model's window is {window:g} s: "
                             f"give between one frame and {window:g} s of audio")
    elif seconds * model.frame_rate >= int(limit * model.frame_rate):
        raise ValueError(f"the {what} is {seconds:.2f} s long but this model generates {limit:g} s: "
                         f"trim the {what} to less than {limit:g} s")
    if not torch.isfinite(audio).all():
        raise ValueError(f"the {what} holds NaN or inf samples; clean the audio first")
    audio = convert_audio(audio.float(), rate, model.sample_rate, model.audio_channels)
    if audio.shape[-1] == 0:
        raise ValueError(f"the {what} is shorter than one sample at {model.sample_rate} Hz ({seconds:.2g} s): give "
                         f"a longer {what}" + (", or use generate()" if what == "prompt" else ""))
    return audio.to(model.device)


# ------------------------------------------------------------------------------------------ prompts files
@dataclasses.dataclass(frozen=True)
class PromptLine:
    """One prompt of a prompts file, with what it sets for itself (None: the command's flag)."""
    text: str
    seed: tp.Optional[int] = None
    duration: tp.Optional[float] = None
    negative: tp.Optional[str] = None


def read_prompts_file(path: tp.Union[str, os.PathLike]) -> tp.List[PromptLine]:
    """The prompts of a file, one a line: plain text, or a JSON object {"text": ..., and optionally "seed" (an
    integer), "duration" (seconds) and "negative" (text)}. Blank lines and lines starting with # are skipped;
    anything else that is not a prompt is a one-line error naming its line."""
    import json
    from pathlib import Path

    lines = []
    for number, raw in enumerate(Path(path).expanduser().read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not line.startswith("{"):
            lines.append(PromptLine(line))
            continue
        try:
            entry = json.loads(line)
        except ValueError as exc:
            raise ValueError(f"{path} line {number}: not valid JSON ({exc.msg})") from None
        lines.append(_prompt_line(entry, f"{path} line {number}"))
    if not lines:
        raise ValueError(f"{path} holds no prompt: write one prompt a line")
    return lines


def _prompt_line(entry: tp.Any, where: str) -> PromptLine:
    unknown = sorted(set(entry) - {"text", "seed", "duration", "negative"}) if isinstance(entry, dict) else None
    if unknown is None or unknown:
        raise ValueError(f"{where}: a JSON line is an object with \"text\" and optionally \"seed\", \"duration\", "
                         f"\"negative\"" + (f"; got {', '.join(map(repr, unknown))}" if unknown else ""))
    text, seed, duration, negative = (entry.get(k) for k in ("text", "seed", "duration", "negative"))
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{where}: \"text\" must be a non-empty string")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ValueError(f"{where}: \"seed\" must be a whole number >= 0, got {seed!r}")
    if duration is not None and (isinstance(duration, bool) or not isinstance(duration, (int, float))
                                 or not math.isfinite(duration) or duration <= 0):
        raise ValueError(f"{where}: \"duration\" must be a positive number of seconds, got {duration!r}")
    if negative is not None and not isinstance(negative, str):
        raise ValueError(f"{where}: \"negative\" must be a string, got {negative!r}")
    return PromptLine(text.strip(), seed, None if duration is None else float(duration), negative)


def launched_shard(environ: tp.Optional[tp.Mapping[str, str]] = None) -> tp.Tuple[int, int]:
    """(rank, world size) of this process as torchrun (or any launcher that sets RANK and WORLD_SIZE) started it;
    (0, 1) alone. The i-th piece of work is this process's when i % world == rank: no process group needed."""
    env = os.environ if environ is None else environ
    try:
        world, rank = int(env.get("WORLD_SIZE", "1")), int(env.get("RANK", "0"))
    except ValueError:
        raise ValueError(f"RANK and WORLD_SIZE must be whole numbers, got RANK={env.get('RANK')!r} "
                         f"WORLD_SIZE={env.get('WORLD_SIZE')!r}") from None
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK {rank} is not between 0 and WORLD_SIZE - 1 ({world - 1})")
    return rank, world
