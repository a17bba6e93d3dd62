"""What the web app does, without the web: request checking, the model cache, generation with
progress and a working Interrupt, prompt-audio preparation and the files it hands back.

Everything here raises `AppError` with one readable sentence for anything the user can fix; the
page (ui.py) shows that sentence and the server stays up.
"""
from __future__ import annotations

import dataclasses
import random
import threading
import time
import typing as tp
from pathlib import Path

import torch

from ..api import MAGNeT
from ..audio import audio_read, audio_write, save_spectrogram
from ..checkpoint import BUNDLED_MODELS, bundled_model_dir
from ..config import generation_params, recommended_params
from ..hardware import mps_available
from ..locate import model_name_problem
from ..request import Request as GenerationRequest
from ..request import run
from ..runtime import check_device, describe_mode
from .security import AppError, Policy, check_model, check_upload, output_stem

RELEASED_MODELS = (
    "facebook/magnet-small-10secs",
    "facebook/magnet-medium-10secs",
    "facebook/magnet-small-30secs",
    "facebook/magnet-medium-30secs",
    "facebook/audio-magnet-small",
    "facebook/audio-magnet-medium",
)
MAX_CLIPS = 8  # result slots on the page: prompts x variations
MAX_SECONDS = 120.0  # longest clip the page makes (past the model's window: overlapping windows)
AUDIO_MODES = ("continue", "edit")  # what an upload is for: continue it, or regenerate a region of it
SPANS = ("stride1", "nonoverlap")
DEVICES = ("auto", "cpu", "cuda", "mps")
LOCAL_MODEL = "a local model folder holding state_dict.bin and compression_state_dict.bin (typed in the Model box)"
SPEEDS = ("reference", "turbo")  # decoding: the reference's, or set_generation_params(speed='turbo')


class Interrupted(Exception):
    """Raised inside the decoding loop when Interrupt is pressed."""

    def __init__(self, step: int, total: int):
        super().__init__(f"interrupted at decoding step {step} of {total}")
        self.step, self.total = step, total


def listed_models() -> tp.Tuple[str, ...]:
    """Every name the page may load without --model-dir or --allow-any-model: bundled and released."""
    return (*BUNDLED_MODELS, *RELEASED_MODELS)


def model_choices() -> tp.List[str]:
    """The bundled demo model (when this copy has it) followed by the six released checkpoints."""
    bundled = [name for name in BUNDLED_MODELS if bundled_model_dir(name) is not None]
    return bundled + list(RELEASED_MODELS)


@dataclasses.dataclass
class Request:
    """One press of Generate, as typed on the page."""
    model: str
    prompts: str  # one prompt per line
    span_arrangement: str = "stride1"
    steps: tp.Sequence[float] = (20, 10, 10, 10)
    temperature: float = 3.0
    top_p: float = 0.9
    max_cfg: float = 10.0
    min_cfg: float = 1.0
    seed: float = -1  # < 0: a random seed, reported back
    variations: float = 1
    prompt_audio: tp.Optional[str] = None  # a file path (the upload)
    prompt_seconds: float = 3.0
    device: str = "auto"
    fast: bool = False  # get_pretrained(fast=True)
    duration: float = 0.0  # seconds; 0: the model's window; past it, overlapping windows
    negative: str = ""  # what to steer away from (replaces the null condition of the guidance)
    loop: bool = False  # a clip that repeats without a seam (one window at most)
    remask_noise: tp.Optional[float] = None  # None: the model's own setting (0 = the reference's sampler)
    audio_mode: str = "continue"  # the upload is continued, or edited ("edit": region_start..region_end regenerated)
    region_start: float = 0.0
    region_end: float = 0.0
    speed: str = "reference"  # SPEEDS: 'turbo' does about half the forward passes (set_generation_params(speed=))


@dataclasses.dataclass
class Clip:
    audio: Path
    image: Path
    caption: str


@dataclasses.dataclass
class Outcome:
    clips: tp.List[Clip]
    message: str  # what happened, for the status line
    model_info: str  # model, device and dtype in use


def parse_prompts(text: tp.Optional[str]) -> tp.List[str]:
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


def _number(value: tp.Any, what: str, low: tp.Optional[float] = None, high: tp.Optional[float] = None,
            integer: bool = False) -> float:
    """A field's number; `low`..`high`: the page's own limits (None: the generation settings' bounds apply, checked
    by GenerationParams, see `check_settings`)."""
    span = f" from {low:g} to {high:g}" if low is not None else ""
    if value is None or value == "":
        raise AppError(f"{what} is empty: enter a number{span}.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise AppError(f"{what} must be a number{span}, got {value!r}.") from None
    if number != number or low is not None and not low <= number <= high:
        raise AppError(f"{what} must be {span.strip() or 'a number'}, got {number:g}.")
    if integer and number != int(number):
        raise AppError(f"{what} must be a whole number, got {number:g}.")
    return int(number) if integer else number


@dataclasses.dataclass
class Checked:
    prompts: tp.List[tp.Optional[str]]
    params: dict  # set_generation_params keywords
    seed: int
    variations: int
    prompt_seconds: float
    duration: tp.Optional[float] = None  # None: the model's window
    negative: tp.Optional[str] = None
    region: tp.Optional[tp.Tuple[float, float]] = None  # set in edit mode


def check_request(req: Request) -> Checked:
    """Validate everything that does not need the model; raises AppError naming the field."""
    prompts: tp.List[tp.Optional[str]] = list(parse_prompts(req.prompts))
    if not prompts:
        if not req.prompt_audio:
            raise AppError("The prompt is empty: describe the audio you want, e.g. \"upbeat funk groove with "
                           "slap bass and drums\" (one prompt per line), or upload audio to continue.")
        prompts = [None]  # continuation without text
    if not str(req.model or "").strip():
        raise AppError("No model chosen: pick one from the list or type a local model directory.")
    if req.span_arrangement not in SPANS:
        raise AppError(f"Span arrangement must be one of {', '.join(SPANS)}, got {req.span_arrangement!r}.")
    if req.device not in DEVICES:
        raise AppError(f"Device must be one of {', '.join(DEVICES)}, got {req.device!r}.")
    if len(req.steps) != 4:
        raise AppError(f"Give decoding steps for the 4 codebooks, got {len(req.steps)} values.")
    steps = [_number(s, f"Decoding steps for codebook {k + 1}", 1, 500, integer=True) for k, s in enumerate(req.steps)]
    temperature = _number(req.temperature, "Temperature")
    top_p = _number(req.top_p, "Top-p")
    max_cfg = _number(req.max_cfg, "Max CFG")
    min_cfg = _number(req.min_cfg, "Min CFG")
    if min_cfg > max_cfg:
        raise AppError(f"Min CFG ({min_cfg:g}) is above max CFG ({max_cfg:g}): the guidance decays from max to min; "
                       f"lower min CFG or raise max CFG.")
    seed = _number(req.seed, "Seed", -1, 2**31 - 1, integer=True)
    if seed < 0:
        seed = random.randrange(2**31 - 1)
    variations = _number(req.variations, "Variations", 1, MAX_CLIPS, integer=True)
    if len(prompts) * variations > MAX_CLIPS:
        raise AppError(f"{len(prompts)} prompts x {variations} variations make {len(prompts) * variations} clips; "
                       f"the page shows at most {MAX_CLIPS}: use fewer prompts or variations.")
    prompt_seconds = _number(req.prompt_seconds, "Prompt length", 0.1, 60)
    duration = _number(req.duration, "Duration", 0, MAX_SECONDS) or None
    if duration is not None and duration < 0.1:
        raise AppError(f"Duration {duration:g} s is too short: ask for at least 0.1 s, or 0 for the model's length.")
    params = dict(use_sampling=True, top_k=0, top_p=top_p, temperature=temperature, max_cfg_coef=max_cfg,
                  min_cfg_coef=min_cfg, decoding_steps=steps, span_arrangement=req.span_arrangement,
                  remove_dc=True)  # written clips never carry a DC offset (audio.remove_dc)
    if req.remask_noise is not None:
        params["remask_noise"] = _number(req.remask_noise, "Re-masking noise")
    if req.speed not in SPEEDS:
        raise AppError(f"Decoding speed must be one of {', '.join(SPEEDS)}, got {req.speed!r}.")
    if req.speed != "reference":
        params["speed"] = req.speed
    check_settings(params)
    negative = " ".join((req.negative or "").split()) or None
    if req.audio_mode not in AUDIO_MODES:
        raise AppError(f"Audio mode must be one of {', '.join(AUDIO_MODES)}, got {req.audio_mode!r}.")
    region = None
    if req.prompt_audio and req.audio_mode == "edit":
        start = _number(req.region_start, "Region start", 0, MAX_SECONDS)
        end = _number(req.region_end, "Region end", 0, MAX_SECONDS)
        if end <= start:
            raise AppError(f"The region to regenerate is empty ({start:g} s to {end:g} s): set its end after its "
                           f"start.")
        region = (start, end)
        if req.loop or duration is not None:
            raise AppError("Editing a region keeps the upload's length: set Duration to 0 and untick Loop.")
    if req.loop and req.prompt_audio and region is None:
        raise AppError("A loop starts from silence: remove the uploaded audio, or untick Loop.")
    return Checked([p for p in prompts for _ in range(variations)], params, seed, variations, prompt_seconds,
                   duration, negative, region)


# the generation settings (GenerationParams' names) as the page labels them
FIELDS = {"temperature": "Temperature", "top_p": "Top-p", "max_cfg_coef": "Max CFG", "min_cfg_coef": "Min CFG",
          "remask_noise": "Re-masking noise", "decoding_steps": "Decoding steps", "top_k": "Top-k",
          "span_arrangement": "Span arrangement"}


def check_settings(params: dict) -> None:
    """The generation settings checked once, by GenerationParams (its bounds are the page's), its error told in
    the page's field names."""
    try:
        generation_params(**params)
    except (ValueError, TypeError) as exc:
        message = str(exc)
        for name, label in FIELDS.items():
            if message.startswith(name):
                message = label + message[len(name):]
                break
        raise AppError(message.rstrip(".") + ".") from None


def resolve_device(choice: str) -> torch.device:
    try:
        return check_device(None if choice == "auto" else choice, fix="choose cpu or auto.")
    except ValueError as exc:
        raise AppError(str(exc)[:1].upper() + str(exc)[1:]) from None


def precision(lm) -> str:
    """How the LM's matrices compute: their dtype ('bfloat16'), or the int8 mode."""
    return describe_mode(lm.dtype, lm.quantized)


def device_summary() -> str:
    """What accelerators this server has, for the page."""
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no"
    mps = "yes" if mps_available() else "no"
    return f"torch {torch.__version__} · CUDA: {cuda} · MPS: {mps} · CPU threads: {torch.get_num_threads()}"


def load_prompt_audio(path: str, sample_rate: int, channels: int, seconds: float, limit: float,
                      policy: Policy = Policy()) -> tp.Tuple[torch.Tensor, int, str]:  # noqa: B008 - frozen
    """Read an upload for continuation and keep its first `seconds` (at most `limit`, the model's
    length less one frame); uploads above the policy's size or duration are refused before decoding.
    Returns (wav [C, T] at its own rate, that rate, a note of what was done; the model resamples and
    down-mixes it)."""
    length = check_upload(path, policy)
    if seconds > limit:
        raise AppError(f"Prompt length {seconds:g} s is too long: this model generates {limit + 0.02:g} s, "
                       f"so keep at most {limit:g} s of prompt.")
    try:
        wav, sr = audio_read(path, duration=seconds)
    except (ValueError, FileNotFoundError):
        raise AppError(f"The uploaded file ({Path(path).name}) is not audio that can be read: "
                       f"upload a wav, flac, ogg or mp3 file.") from None
    if wav.shape[-1] == 0:
        raise AppError(f"The uploaded file ({Path(path).name}) holds no audio: upload a longer recording.")
    keep = min(seconds, length)
    done = []
    if keep < length:
        done.append(f"kept the first {keep:g} s of {length:.1f} s")
    if sr != sample_rate:
        done.append(f"resampled {sr / 1000:g} kHz -> {sample_rate / 1000:g} kHz")
    if wav.shape[0] != channels:
        done.append(f"{'mixed down' if wav.shape[0] > channels else 'spread'} {wav.shape[0]} -> {channels} channel(s)")
    note = f"Prompt audio: {', '.join(done) if done else 'used as is'}; the clip continues it."
    return wav, sr, note


def load_edit_audio(path: str, window: float, region: tp.Tuple[float, float],
                    policy: Policy = Policy()) -> tp.Tuple[torch.Tensor, int, str]:  # noqa: B008 - frozen
    """Read an upload to edit: at most the model's window (`window` s) from its start; the region must lie inside
    what is kept. Returns (wav [C, T] at its own rate, that rate, a note for the status line)."""
    length = check_upload(path, policy)
    try:
        wav, sr = audio_read(path, duration=window)
    except (ValueError, FileNotFoundError):
        raise AppError(f"The uploaded file ({Path(path).name}) is not audio that can be read: "
                       f"upload a wav, flac, ogg or mp3 file.") from None
    kept = wav.shape[-1] / sr
    if wav.shape[-1] == 0:
        raise AppError(f"The uploaded file ({Path(path).name}) holds no audio: upload a longer recording.")
    start, end = region
    if end > kept + 1e-6:
        raise AppError(f"The region {start:g}-{end:g} s ends after the audio that is edited ({kept:.2f} s"
                       + (f", the model's window, of {length:.1f} s" if kept < length - 1e-3 else "")
                       + f"): end it by {kept:.2f} s.")
    note = (f"Edited {start:g}-{end:g} s of the upload" + (f" (its first {kept:.2f} s)" if kept < length - 1e-3
                                                          else "") + "; the rest keeps its codes.")
    return wav, sr, note


def generation_request(req: Request, checked: Checked, prompt: tp.Optional[tp.Tuple[torch.Tensor, int]],
                       progress: tp.Callable[[int, int], None]) -> GenerationRequest:
    """The generation request of a checked page request (prompt: the upload read, (wav [C, T], rate)). Its
    settings are per call: the cached model, shared by every visitor, is never changed."""
    negatives = None if checked.negative is None else [checked.negative] * len(checked.prompts)
    common = dict(prompts=checked.prompts, negatives=negatives, seed=checked.seed, progress=progress,
                  params={"speed": None, **checked.params}, duration=checked.duration)
    if prompt is None:
        return GenerationRequest(mode="loop" if req.loop else "text", **common)
    wav, sr = prompt
    batch = wav[None].expand(len(checked.prompts), -1, -1)
    if checked.region is not None:
        return GenerationRequest(mode="edit", audio=batch, audio_rate=sr, regions=[checked.region], crossfade=0.05,
                                 **common)
    return GenerationRequest(mode="continue", audio=batch, audio_rate=sr, **common)


def error_message(exc: BaseException) -> str:
    """One sentence for the page from any exception."""
    if isinstance(exc, AppError):
        return str(exc)
    first = (str(exc).strip().splitlines() or [""])[0]
    if isinstance(exc, (ValueError, TypeError, OSError, LookupError)):
        return first[:1].upper() + first[1:] if first else type(exc).__name__
    return f"Generation failed ({type(exc).__name__}: {first}); the server log has the details."


class Engine:
    """Shared by every visitor of one app: one cached model, one generation at a time (the page's
    queue orders the rest), and an interrupt flag that belongs to the visitor whose job is running.
    `policy` says which models visitors may load and how large an upload may be (security.Policy)."""

    def __init__(self, out_dir: tp.Union[str, Path], threads: tp.Optional[int] = None,
                 policy: tp.Optional[Policy] = None):
        self.out_dir = Path(out_dir)
        self.threads = threads
        self.policy = policy or Policy()
        self._model = None
        self._model_key: tp.Optional[tuple] = None
        self._failed: tp.Optional[str] = None  # a model whose loading failed after the previous one was freed
        self._lock = threading.Lock()  # one generation at a time
        self._stop = threading.Event()
        self._running_session: tp.Optional[str] = None

    # ------------------------------------------------------------------ model cache
    def model(self, name: str, device: str, fast: bool = False):
        """The model `name` on `device` (auto, cpu, cuda, mps), loaded once and kept until another is
        asked for; `fast`: get_pretrained(fast=True), the fastest close-to-exact mode of the device."""
        name = name.strip()
        target = check_model(name, self.policy, listed_models())
        dev = resolve_device(device)
        key = (name, str(dev), bool(fast))
        if self._model_key != key:
            problem = model_name_problem(str(target), LOCAL_MODEL)  # seconds, offline too; the old model stays
            if problem is not None:
                raise AppError(f"Could not load model {name!r}: {problem}.")
            self._model = self._model_key = None  # free the old one first
            self._failed = name
            try:
                self._model = MAGNeT.get_pretrained(target, device=dev, fast=bool(fast))
            except Exception as exc:  # noqa: BLE001 - told to the user as a sentence
                raise AppError(f"Could not load model {name!r}: {error_message(exc)}") from exc
            self._model_key, self._failed = key, None
        return self._model

    def recommended_params(self, name: str, device: str = "auto", fast: bool = False) -> dict:
        """The page's settings for the model `name`, from the model itself (MAGNeT.recommended_params: its own
        sample rate, window and stored settings), loaded through the cache; when it cannot be loaded, the music
        models' recommendation (Generate then tells why it cannot be loaded)."""
        try:
            return self.model(name, device, fast).recommended_params()
        except AppError:
            return recommended_params(32000, 10.0)

    def model_info(self) -> str:
        if self._model is None and self._failed:
            return f"No model loaded: loading {self._failed} failed (see the status line). {device_summary()}"
        if self._model is None:
            return f"No model loaded yet. {device_summary()}"
        m = self._model
        fast = ', fast mode' if self._model_key[2] else ''
        return (f"Model **{self._model_key[0]}** on **{m.device}** ({precision(m.lm)}{fast}) · "
                f"{m.sample_rate // 1000} kHz, {m.max_duration:g} s clips · {device_summary()}")

    # ------------------------------------------------------------------ interrupt
    def interrupt(self, session: tp.Optional[str] = None) -> bool:
        """Stop the running generation if it is this session's (any session's when None)."""
        if self._running_session is None or (session is not None and session != self._running_session):
            return False
        self._stop.set()
        return True

    # ------------------------------------------------------------------ generation
    def generate(self, req: Request, session: str = "local",
                 progress: tp.Optional[tp.Callable[[int, int], None]] = None) -> Outcome:
        """Run one request; raises AppError (readable) or Interrupted (after the step in progress)."""
        checked = check_request(req)
        check_model(req.model, self.policy, listed_models())  # refused before waiting for the lock
        with self._lock:
            self._stop.clear()
            self._running_session = session
            try:
                return self._generate(req, checked, progress)
            finally:
                self._running_session = None
                self._stop.clear()

    def _generate(self, req: Request, checked: Checked, progress) -> Outcome:
        if self.threads:
            torch.set_num_threads(self.threads)
        started = time.perf_counter()
        model = self.model(req.model, req.device, req.fast)
        notes = []
        prompt = None
        if req.prompt_audio and checked.region is not None:
            wav, sr, note = load_edit_audio(req.prompt_audio, model.max_duration, checked.region, self.policy)
            prompt = (wav, sr)
            notes.append(note)
        elif req.prompt_audio:
            limit = (int(model.max_duration * model.frame_rate) - 1) / model.frame_rate
            wav, sr, note = load_prompt_audio(req.prompt_audio, model.sample_rate, model.audio_channels,
                                              checked.prompt_seconds, limit, self.policy)
            prompt = (wav, sr)
            notes.append(note)

        def on_step(step: int, total: int) -> None:
            if self._stop.is_set():
                raise Interrupted(step, total)
            if progress is not None:
                progress(step, total)

        try:
            wavs = run(model, generation_request(req, checked, prompt, on_step)).audio
        except Interrupted:
            raise
        except Exception as exc:  # noqa: BLE001 - a sentence on the page, the server stays up
            raise AppError(error_message(exc)) from exc
        stamp = time.strftime("%Y%m%d-%H%M%S")
        clips = []
        for i, (text, wav) in enumerate(zip(checked.prompts, wavs, strict=True)):
            variation = i % checked.variations + 1
            stem = output_stem(self.out_dir, text, i, stamp)
            audio = audio_write(stem, wav.cpu(), model.sample_rate, strategy="loudness", loudness_compressor=True)
            label = "".join(c if c.isprintable() else " " for c in text or ("edit" if checked.region else
                                                                             "continuation"))  # no control chars
            if checked.variations > 1:
                label += f" (variation {variation})"
            image = save_spectrogram(wav.cpu(), model.sample_rate, stem.with_suffix(".png"), title=label)
            clips.append(Clip(audio, image, label))
        seconds = time.perf_counter() - started
        length = wavs.shape[-1] / model.sample_rate
        notes.insert(0, f"Generated {len(clips)} clip(s) of {round(length, 2):g} s in {seconds:.1f} s "
                        f"(seed {checked.seed})"
                        + (", a seamless loop" if req.loop else "") + ".")
        return Outcome(clips, " ".join(notes), self.model_info())
