"""MAGNeT: the user-facing model, with the seed's API (audiocraft models/magnet.py + genmodel.py).

    model = MAGNeT.get_pretrained('facebook/magnet-small-10secs')
    model.set_generation_params(decoding_steps=[20, 10, 10, 10], span_arrangement='stride1')
    wav = model.generate(['happy rock'])            # [B, 1, samples] float32 at model.sample_rate

Generation always uses classifier-free guidance: the batch is doubled into conditional rows and
null rows (zero condition), as in the reference, also for unconditional generation.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import platform
import re
import typing as tp
import warnings
from pathlib import Path

import torch

from .audio import convert_audio, remove_dc
from .checkpoint import load_model, push_model, save_model
from .conditioners import check_descriptions, make_conditioner
from .config import SPEED_FIELDS, GenerationParams, LMConfig, TextConfig, speed_settings
from .decoding import generate_tokens, mix_guidance, top_code_share
from .hardware import bf16_native, cuda_bf16_native, int8_saturates, mps_available, slow_dtype_reason
from .lm import MagnetLM, pad_cross_kv
from .quantize import check_mode as check_quantize_mode
from .runtime import TEXT_BUCKET, FastMode, describe_mode, fast_mode


PathLike = tp.Union[str, os.PathLike]
logger = logging.getLogger("openmagnet")


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """float32 on CPU and MPS; on CUDA bfloat16 where the GPU runs it natively (compute capability
    8.0 on), float16 otherwise (T4, V100: `torch.cuda.is_bf16_supported()` counts their emulated,
    slow bf16)."""
    if device.type == "cuda":
        return torch.bfloat16 if cuda_bf16_native(device) else torch.float16
    return torch.float32


def check_device(device: tp.Union[str, torch.device, None],
                 fix: str = "use device='cpu', or device=None for the best available") -> torch.device:
    """The device to run on (None: `default_device()`), or a one-line ValueError ending in `fix` when
    it is not a device name or this machine lacks it (the CLI and the app pass their own `fix`)."""
    if device is None:
        return default_device()
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}: {fix}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"CUDA is not available on this machine (no NVIDIA GPU, or a CPU-only torch build): {fix}")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"there is no GPU {device} on this machine ({torch.cuda.device_count()} found): {fix}")
    if device.type == "mps" and not mps_available():
        raise ValueError(f"MPS (the Apple GPU) is not available on this machine: {fix}")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {str(device)!r} is not supported: {fix}")
    return device


def codec_device(device: tp.Union[str, torch.device], mac_version: tp.Optional[str] = None,
                 torch_version: tp.Optional[str] = None) -> torch.device:
    """Where the codec runs for a model on `device`: the same device, except on MPS before macOS 15.1
    or torch 2.6, which refuse (or, before torch 2.5, miscompute) a convolution with an output
    dimension over 65536 (pytorch#129207, #140726), and a 10 s clip is 320,000 samples: there the
    codec runs on the CPU. mac_version / torch_version ('14.6.1', '2.5.1+cpu'): default this machine's."""
    device = torch.device(device)
    if device.type != "mps":
        return device
    mac = _release(platform.mac_ver()[0] if mac_version is None else mac_version)
    torch_release = _release(torch.__version__ if torch_version is None else torch_version)
    return device if mac >= (15, 1) and torch_release >= (2, 6) else torch.device("cpu")


def _release(version: str) -> tp.Tuple[int, ...]:
    """(15, 1) from '15.1', (2, 6, 0) from '2.6.0+cpu'; () when unreadable (sorts before any release)."""
    found = re.match(r"\d+(\.\d+)*", version.strip())
    return tuple(int(part) for part in found.group(0).split(".")) if found else ()


def check_generator(generator: tp.Optional[torch.Generator], device: torch.device) -> None:
    """Sampling draws its random numbers on `device`: a generator must live there too (torch
    otherwise fails mid-generation with "Expected a 'cuda' device type for generator")."""
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    check_generator_device(generator.device, device)


def check_generator_device(generator_device: torch.device, model_device: torch.device) -> None:
    if generator_device.type != model_device.type or (
            None not in (generator_device.index, model_device.index) and generator_device.index != model_device.index):
        raise ValueError(f"the generator is on {generator_device} but the model samples on {model_device}: "
                         f"create it there, e.g. torch.Generator(device=model.device).manual_seed(0)")


def deterministic(enabled: bool = True) -> None:
    """Repeatable CUDA runs (CPU runs already are): deterministic kernels only (a kernel without one
    raises), no cuDNN autotuning, no TF32 in matrix products and convolutions, and
    CUBLAS_WORKSPACE_CONFIG=:4096:8 when unset (cuBLAS reads it once: call this before the first CUDA
    work). Slower. Runs then repeat on the same GPU, driver and torch, but still differ from CPU runs
    (other kernels, other summation order), and bf16 (the CUDA default) from float32.
    enabled=False restores torch's defaults."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.allow_tf32 = not enabled
    torch.set_float32_matmul_precision("highest")


class GuidedLogits:
    """The model as decoding sees it (a decoding.GuidedFn): runs the [conditional; null] batch and mixes the
    stage's logits as uncond + (cond - uncond) * coef, in float32; or the halves apart, for guidance reuse.
    The cross-attention keys/values of the text never change during a generation, so they are computed once
    here; the null rows' condition is all zeros, so their cross-attention (exactly 0) is skipped. `passes`
    counts forward-pass equivalents (one pass of the B conditional rows; a guided step is 2)."""

    def __init__(self, lm: MagnetLM, cond: torch.Tensor, batch_size: int):
        self.lm, self.batch_size, self.passes = lm, batch_size, 0
        null_is_zero = bool(torch.count_nonzero(cond[batch_size:]) == 0)
        self.cross_kv = lm.cross_kv(cond[:batch_size] if null_is_zero else cond)
        if lm.compiled_layers is not None:  # fixed shapes: the text padded to a bucket (masked)
            self.cross_kv = pad_cross_kv(self.cross_kv, TEXT_BUCKET)
        self.cond_kv = self.cross_kv if null_is_zero else [tuple(t[:batch_size] if t.shape[0] > 1 else t for t in kv)
                                                           for kv in self.cross_kv]

    def pair(self, codes: torch.Tensor, stage: int) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        """(conditional, null) logits [B, T, N] of the stage, float32."""
        self.passes += 2
        logits = self.lm.stage_logits(torch.cat([codes, codes], dim=0), None, stage, self.cross_kv).float()
        cond_logits, uncond_logits = logits.split(self.batch_size, dim=0)
        return cond_logits, uncond_logits

    def cond(self, codes: torch.Tensor, stage: int) -> torch.Tensor:
        """The conditional rows' logits [B, T, N] alone, float32."""
        self.passes += 1
        return self.lm.stage_logits(codes, None, stage, self.cond_kv).float()

    def __call__(self, codes: torch.Tensor, stage: int, coef: float) -> torch.Tensor:
        return mix_guidance(*self.pair(codes, stage), coef)


def guided_logits_fn(lm: MagnetLM, cond: torch.Tensor, batch_size: int) -> GuidedLogits:
    """logits_fn for decoding (see `GuidedLogits`)."""
    return GuidedLogits(lm, cond, batch_size)


def per_item_descriptions(descriptions: tp.Optional[tp.List[tp.Optional[str]]], n: int,
                          items: str) -> tp.List[tp.Optional[str]]:
    """One checked description (or None) per audio item; None: no text for any of the n items."""
    descriptions = check_descriptions([None] * n if descriptions is None else descriptions)
    if len(descriptions) != n:
        raise ValueError(f"got {len(descriptions)} descriptions for {n} {items}: "
                         f"pass one description (or None) per {items[:-1]}")
    return descriptions


def recommended_params(sample_rate: int, max_duration: float, **given: tp.Any) -> dict:
    """set_generation_params() keywords for a model of `sample_rate` Hz that makes `max_duration` s:
    what the audiocraft demos recommend (it differs from the API defaults): span arrangement 'stride1',
    20 first-codebook steps per 10 s of audio, and for the 16 kHz sound models temperature 3.5, top-p 0.8,
    max CFG 20; and (ours) the audio without its DC offset (remove_dc: inaudible, and a clip's offset would
    otherwise grow with its loudness normalisation). Each of `given` (set_generation_params() keywords) that
    is not None replaces its recommendation."""
    sound = sample_rate == 16000
    params = dict(use_sampling=True, top_k=0, top_p=0.8 if sound else 0.9, temperature=3.5 if sound else 3.0,
                  max_cfg_coef=20.0 if sound else 10.0, min_cfg_coef=1.0,
                  decoding_steps=[int(20 * max_duration // 10), 10, 10, 10], span_arrangement="stride1",
                  remask_noise=0.0, remove_dc=True)
    unknown = sorted(set(given) - set(params))
    if unknown:
        raise TypeError(f"recommended_params() takes set_generation_params() keywords {sorted(params)}, got {unknown}")
    params.update({key: value for key, value in given.items() if value is not None})
    return params


def _print_progress(step: int, total: int) -> None:
    print(f"{step: 6d} / {total: 6d}", end="\r", flush=True)


class MAGNeT:
    """A MAGNeT LM, its text encoder and its codec. Build it with `MAGNeT.get_pretrained`."""

    def __init__(self, name: str, lm: MagnetLM, text: TextConfig, compression_model: tp.Any,
                 conditioner: tp.Any = None, generation: tp.Optional[dict] = None,
                 xp_cfg: tp.Optional[dict] = None, codec_cfg: tp.Optional[dict] = None):
        """`conditioner`: a text conditioner already loaded (`conditioners.make_conditioner`, e.g. a
        training run's), whose projection must be `lm`'s; by default it is loaded on first use.
        `generation`: the model's own generation settings (set_generation_params() keywords, stored in
        its checkpoint by `openmagnet export --generation`): in force from the start, and the base of
        `recommended_params()`; None keeps audiocraft's API defaults.
        `xp_cfg`, `codec_cfg`: the audiocraft configs the checkpoint stores (the LM's xp.cfg; the codec's as
        {'xp.cfg': dict}, or {'pretrained': name} for a pointer codec), as loaded, which `save_pretrained`
        writes back; None for a model built in memory (a training run's), which cannot be saved that way."""
        if conditioner is not None and conditioner.projection is not lm.condition_provider.output_proj:
            raise ValueError("the conditioner projects with another LM's output_proj: give it this LM's "
                             "(conditioner.with_projection(lm.condition_provider.output_proj))")
        self.name = name
        self.lm = lm
        self.text_config = text
        self.compression_model = compression_model
        self.max_duration: float = lm.cfg.segment_duration
        self.duration: float = self.max_duration
        # beyond the window: each new window starts with the last (window - extend_stride) s of the previous
        # ones as its prompt (None: half the window), as audiocraft's MusicGen extends with `extend_stride`
        self.extend_stride: tp.Optional[float] = None
        self._conditioner = conditioner
        self._progress_callback: tp.Optional[tp.Callable[[int, int], None]] = None
        self.params = GenerationParams()
        self.fast_mode: tp.Optional[FastMode] = None  # what fast=True chose, and why (get_pretrained)
        # forward-pass equivalents run so far (one pass of a batch's conditional rows; a guided step is 2)
        self.forward_passes = 0
        self.stored_generation = dict(generation) if generation else None
        self.xp_cfg = xp_cfg
        self.codec_cfg = codec_cfg
        if self.stored_generation:
            self.set_generation_params(**self.stored_generation)

    # -------------------------------------------------------------------------------- loading
    @staticmethod
    def get_pretrained(name: PathLike = "facebook/magnet-small-10secs",
                       device: tp.Optional[tp.Union[str, torch.device]] = None,
                       dtype: tp.Optional[tp.Union[str, torch.dtype]] = None, codec: tp.Optional[PathLike] = None,
                       text_encoder: tp.Optional[PathLike] = None, quantize: tp.Optional[str] = None,
                       banded_attention: tp.Optional[bool] = None, fast: bool = False,
                       fast_recheck: bool = False, compile: bool = False) -> "MAGNeT":
        """Load a released checkpoint by hub id, a local directory holding `state_dict.bin` and
        `compression_state_dict.bin`, or an explicit `state_dict.bin` path (the codec is then taken
        from the same directory unless `codec` names another file, directory or hub id); or a model
        written by `save_pretrained` / `push_to_hub`, by its directory or hub id (see `from_pretrained`).

        device: None picks cuda, then mps, then cpu. dtype: the LM's weight dtype (None: float32 on
        CPU/MPS, bfloat16 on CUDA); the text encoder and the codec always run in float32.
        text_encoder: a hub id or local directory to use instead of the T5 named by the checkpoint
        (it is loaded on the first generation).

        Speed (see README, "Speed"): the default float32 on CPU is the exact mode, bit-identical to
        audiocraft. fast=True picks the fastest mode that stays close to exact on this machine: on CPU it times
        the candidate kernels on the model's own matrix shapes the first time (a few seconds, then cached per CPU
        model and torch version in `runtime.user_cache_dir()`; fast_recheck=True times them again); see
        `runtime.fast_mode`. `model.mode` says what runs, `model.fast_mode` why. By hand: dtype=torch.bfloat16 runs the
        transformer's matrices in bf16 (residual stream, heads and guidance stay float32), refused
        on a CPU without native bf16, where it is 10-100x slower. quantize='int8' (CPU only) runs
        the feed-forward matrices in int8 and the attention projections in dtype (default bfloat16
        where native, else float32); quantize='int8-all' runs every matrix in int8 (fastest, least
        accurate; see quantize.py), with the int8 kernel that measured fastest on this machine.
        banded_attention: compute the restricted attention of codebooks 1..3 over its window only
        (same maths, equal to float rounding); None turns it on for the fast CPU modes (every CPU
        mode but exact float32).
        compile: torch.compile the transformer's layers for fixed shapes (`runtime.compile_lm`; CUDA graphs on
        CUDA): the first generation of each shape pays the compile time. Only with a mode that is not exact
        (fast=True, dtype= or quantize=): exact float32 stays uncompiled, bit-identical to audiocraft."""
        check_quantize_mode(quantize)  # everything below is checked before the (slow) loading
        if device is None and quantize is not None:
            device = "cpu"  # the int8 kernels are CPU kernels: do not load the LM onto a GPU first
        device = check_device(device)
        if quantize is not None and device.type != "cpu":
            raise ValueError(f"quantize={quantize!r} runs on CPU only, but device is {device}: use "
                             f"dtype=torch.bfloat16 or torch.float16 on {device.type}, or device='cpu'")
        if fast_recheck and not fast:
            raise ValueError("fast_recheck=True measures the kernels of fast mode again: add fast=True")
        exact = dtype is None and device.type != "cuda" or dtype is not None and _parse_dtype(dtype) == torch.float32
        if compile and not fast and quantize is None and exact:
            raise ValueError("compile=True changes the float arithmetic, and exact float32 stays uncompiled "
                             "(bit-identical to audiocraft): add fast=True (or dtype= / quantize=)")
        mode = None
        measure = fast and device.type == "cpu"  # the CPU's kernels are timed on the loaded model
        if fast:
            if dtype is not None or quantize is not None:
                raise ValueError("fast=True chooses dtype and quantize for this machine: drop dtype= and quantize=, "
                                 "or drop fast=True")
            if not measure:
                mode = fast_mode(device)
                dtype = mode.dtype
            if banded_attention is None:
                banded_attention = True if measure else mode.banded_attention
        if quantize == "int8-all" and dtype is not None and _parse_dtype(dtype) != torch.float32:
            raise ValueError(f"quantize='int8-all' leaves no matrix in dtype={dtype!r}: drop dtype, or use "
                             f"quantize='int8' to keep the attention projections in that dtype")
        if dtype is not None:
            dtype = _parse_dtype(dtype)
        elif quantize in ("int8", "int8-hybrid"):  # the attention projections: bf16 where the CPU runs it natively
            dtype = torch.bfloat16 if bf16_native(device) else torch.float32
        else:
            dtype = torch.float32 if quantize is not None or measure else default_dtype(device)
        reason = slow_dtype_reason(device, dtype)
        if reason is not None:
            raise ValueError(f"dtype={dtype} on CPU is a trap: {reason}: use fast=True (it measures what this CPU "
                             f"runs fastest) or the default float32")
        loaded = load_model(name, device=device, dtype=dtype, codec_device=codec_device(device), codec=codec,
                            text_encoder=text_encoder, quantize=quantize, mode=mode, measure=measure,
                            fast_recheck=fast_recheck, banded_attention=banded_attention, compile=compile)
        model = MAGNeT(**loaded.parts())
        model.fast_mode = loaded.fast_mode
        if loaded.fast_mode is not None:
            logger.info("fast mode: %s (%s)", model.mode, loaded.fast_mode.why)
        return model

    @classmethod
    def from_pretrained(cls, name_or_path: PathLike, device: tp.Optional[tp.Union[str, torch.device]] = None,
                        dtype: tp.Optional[tp.Union[str, torch.dtype]] = None, **options: tp.Any) -> "MAGNeT":
        """Load a model by hub id or local directory, in the layout `save_pretrained` writes (config.json,
        model.safetensors, compression_model.safetensors) or in audiocraft's (state_dict.bin,
        compression_state_dict.bin): the same loader as `get_pretrained`, whose keywords (quantize, fast,
        codec, text_encoder, banded_attention) `options` passes on. A hub id is fetched through
        huggingface_hub's cache (HF_HUB_CACHE; HF_HUB_OFFLINE=1 reads the cache only). Loading is strict:
        every tensor of the files lands in a parameter and every parameter comes from them."""
        return cls.get_pretrained(name_or_path, device=device, dtype=dtype, **options)

    def save_pretrained(self, save_directory: PathLike, layout: str = "hf", dtype: tp.Optional[torch.dtype] = None,
                        license: tp.Optional[str] = None, overwrite: bool = False) -> Path:
        """Write the model into `save_directory` (created), for `from_pretrained` / `get_pretrained`:

        layout='hf': config.json (the LM's and the codec's audiocraft xp.cfg as loaded, the stored generation
        settings, the text encoder, sample rate, window), model.safetensors (the LM), compression_model.safetensors
        (the codec, or the name of the Hugging Face EnCodec it points to) and a README.md model card.
        layout='audiocraft': the released layout audiocraft loads, state_dict.bin (fp16) and
        compression_state_dict.bin (plus model.safetensors and the card), as `openmagnet export` writes it.

        dtype (layout 'hf'): the LM's floating tensors in this dtype, e.g. torch.float16 (the released
        precision, half the size); None keeps the model's own, so the files load back identical. license: the
        model card's (default: that of Meta's released weights, cc-by-nc-4.0, for their checkpoints and what is
        fine-tuned from them; 'other' for a model openmagnet trained from scratch, whose trainer sets it). A folder
        that already holds a model is refused unless overwrite=True; then the files are written completely before
        any existing one is replaced. Returns the directory."""
        return save_model(save_directory, **self._saved_parts(), layout=layout, dtype=dtype, license=license,
                          overwrite=overwrite)

    def push_to_hub(self, repo_id: str, private: bool = False, token: tp.Optional[str] = None,
                    commit_message: str = "Upload MAGNeT model", layout: str = "hf",
                    dtype: tp.Optional[torch.dtype] = None, license: tp.Optional[str] = None) -> tp.Any:
        """Upload the model to the Hugging Face hub as `repo_id` ('your-name/my-magnet'; created when it does not
        exist, `private` then): `save_pretrained(layout, dtype, license)` into a temporary directory, then one
        commit of it. token: None uses the login of `huggingface-cli login` / HF_TOKEN. Returns the commit info;
        `MAGNeT.from_pretrained(repo_id)` then loads it anywhere."""
        return push_model(repo_id, private=private, token=token, commit_message=commit_message,
                          **self._saved_parts(), layout=layout, dtype=dtype, license=license)

    def _saved_parts(self) -> dict:
        return dict(lm=self.lm, codec=self.compression_model, xp_cfg=self.xp_cfg, codec_cfg=self.codec_cfg,
                    generation=self.stored_generation)

    @property
    def conditioner(self):
        """The T5 conditioner, loaded on first use (the only part that needs transformers)."""
        if self._conditioner is None:
            self._conditioner = make_conditioner(self.text_config.name, self.text_config.kind,
                                                 self.lm.condition_provider.output_proj, device=self.device)
        return self._conditioner

    # ------------------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return self.lm.device

    @property
    def mode(self) -> str:
        """How the LM runs: 'float32 (exact)', 'int8 feed-forward + float32 attention, banded attention', ..."""
        lm = self.lm
        ffn = lm.transformer.layers[0].linear1.weight
        text = describe_mode(lm.dtype, lm.quantized, lm.int8_engine, None if ffn.is_meta else ffn.dtype)
        if lm.quantized and self.device.type == "cpu" and lm.int8_engine != "int_mm" and \
                int8_saturates(lm.int8_engine):
            text += ", int8 weights fitted to 16-bit pairs (no VNNI)"
        if lm.banded_attention:
            text += ", banded attention"
        elif lm.dtype == ffn.dtype == torch.float32 and not lm.quantized and self.device.type == "cpu":
            text += " (exact)"
        return text

    @property
    def cfg(self) -> LMConfig:
        return self.lm.cfg

    @property
    def frame_rate(self) -> float:
        return float(self.compression_model.frame_rate)

    @property
    def sample_rate(self) -> int:
        return int(self.compression_model.sample_rate)

    @property
    def audio_channels(self) -> int:
        return int(self.compression_model.channels)

    @property
    def generation_params(self) -> dict:
        """The current settings, under the reference's names (temperature is stored as 'temp'); our
        `remask_noise` and `remove_dc` are listed only when set, and the speed settings only when one is on, so
        the dict is the reference's otherwise. `set_generation_params(**model.generation_params)` restores them
        (it takes `temp` for `temperature`)."""
        p = self.params
        params = dict(use_sampling=p.use_sampling, temp=p.temperature, top_k=p.top_k, top_p=p.top_p,
                      max_cfg_coef=p.max_cfg_coef, min_cfg_coef=p.min_cfg_coef,
                      decoding_steps=list(p.decoding_steps), span_arrangement=p.span_arrangement)
        ours = dict(remask_noise=p.remask_noise, remove_dc=p.remove_dc)
        params.update({key: value for key, value in ours.items() if value})
        if not p.reference_decoding or p.speed is not None:
            params.update(speed=p.speed, **{name: getattr(p, name) for name in SPEED_FIELDS})
        return params

    # -------------------------------------------------------------------------------- settings
    def set_generation_params(self, use_sampling: bool = True, top_k: int = 0, top_p: float = 0.9,
                              temperature: float = 3.0, max_cfg_coef: float = 10.0, min_cfg_coef: float = 1.0,
                              decoding_steps: tp.Sequence[int] = (20, 10, 10, 10),
                              span_arrangement: str = "nonoverlap", remask_noise: float = 0.0,
                              remove_dc: bool = False, speed: tp.Optional[str] = None,
                              guidance_every: tp.Optional[int] = None, fine_step_share: tp.Optional[float] = None,
                              confidence_stop: tp.Optional[float] = None, *, temp: tp.Optional[float] = None) -> None:
        """Same names and defaults as audiocraft. The demos use span_arrangement='stride1', and
        decoding_steps=[60, 10, 10, 10] for the 30-second models. remask_noise (ours, 0 = the reference's
        sampler): Gumbel noise on the re-masking confidence, annealed with the mask rate (MaskGIT's choice
        temperature); a few units keep one confident code from filling the clip. remove_dc (ours, False = the
        reference's audio): the generated audio without its DC offset and sub-10 Hz drift (`audio.remove_dc`).
        temp: `temperature` under the name `generation_params` lists it by (the reference's).

        Decoding that does less work (ours; off by default, so decoding is the reference's; see decoding.py and
        README, "Speed"): speed='turbo' (config.SPEED_PRESETS: about half the forward passes) sets the three
        below, each of which may also be given alone or to override the preset: guidance_every=k runs the null
        rows of classifier-free guidance every k-th step only and reuses the cond - null difference in between
        (none at all where the coefficient is 1); fine_step_share=s runs that share of decoding_steps for
        codebooks 1-3; confidence_stop=c never re-masks a token sampled with probability >= c and ends a stage
        once all are (adaptive steps)."""
        if temp is not None:
            if temperature != 3.0 and temperature != temp:
                raise TypeError(f"set_generation_params() got temperature={temperature!r} and temp={temp!r}: "
                                f"give one (temp is generation_params' name for temperature)")
            temperature = temp
        if isinstance(decoding_steps, tp.Sequence) and not isinstance(decoding_steps, str):
            decoding_steps = tuple(int(s) if isinstance(s, float) and s.is_integer() else s for s in decoding_steps)
        fields = speed_settings(speed, guidance_every=guidance_every, fine_step_share=fine_step_share,
                                confidence_stop=confidence_stop)
        self.params = GenerationParams(use_sampling=bool(use_sampling), top_k=int(top_k), top_p=top_p,
                                       temperature=temperature, max_cfg_coef=max_cfg_coef,
                                       min_cfg_coef=min_cfg_coef, decoding_steps=decoding_steps,
                                       span_arrangement=span_arrangement, remask_noise=remask_noise,
                                       remove_dc=remove_dc, **fields)

    def recommended_params(self, **given: tp.Any) -> dict:
        """set_generation_params() keywords for this model: its own stored settings where it has them
        (the bundled demo model), else what the audiocraft demos recommend for its kind
        (`api.recommended_params`); each of `given` that is not None replaces its value."""
        base = recommended_params(self.sample_rate, self.max_duration, **given)  # checks the keywords
        stored = {k: v for k, v in (self.stored_generation or {}).items() if given.get(k) is None}
        return {**base, **stored}

    def set_custom_progress_callback(self, progress_callback: tp.Optional[tp.Callable[[int, int], None]] = None):
        """`callback(step, total)` after every decoding step, when generating with progress=True."""
        self._progress_callback = progress_callback

    # ------------------------------------------------------------------------------ generation
    def generate(self, descriptions: tp.List[tp.Optional[str]], progress: bool = False,
                 return_tokens: bool = False, generator: tp.Optional[torch.Generator] = None,
                 negative_descriptions: tp.Optional[tp.List[tp.Optional[str]]] = None,
                 loop: bool = False, loop_seam: float = 1.0):
        """Audio [B, 1, samples] for B text descriptions (and the tokens [B, K, T] if asked).
        generator: for reproducible sampling, on the model's device:
        `torch.Generator(device=model.device).manual_seed(0)`.
        negative_descriptions: one text (or None) per description, what to steer away from: its condition
        replaces the null condition of classifier-free guidance (None: exactly the usual guidance).
        loop: make a clip that repeats without a seam (see `_loop_tokens`): after the generation, `loop_seam`
        seconds around the wrap point are regenerated with the clip's end and start as their context, and the
        audio is decoded as one period of the repeated clip. A loop is at most one window long."""
        descriptions = check_descriptions(descriptions)
        negatives = check_negatives(negative_descriptions, len(descriptions))
        if loop:
            if self.duration > self.max_duration:
                raise ValueError(f"a loop is made in one window: set model.duration to at most {self.max_duration:g} s "
                                 f"(it is {self.duration:g} s)")
            if isinstance(loop_seam, bool) or not isinstance(loop_seam, (int, float)) or \
                    not 1 / self.frame_rate <= loop_seam < self.duration:
                raise ValueError(f"loop_seam must be between one frame and the clip's length ({self.duration:g} s), "
                                 f"got {loop_seam!r}")
            tokens = self._generate_tokens(descriptions, None, progress, generator, negatives=negatives)
            tokens = self._loop_tokens(tokens, descriptions, negatives, loop_seam, generator)
            audio = self.decode_loop(tokens)
            if self.params.remove_dc:
                audio = remove_dc(audio, self.sample_rate, periodic=True)  # one period of the loop: wrap unchanged
            return (audio, tokens) if return_tokens else audio
        tokens = self._generate_tokens(descriptions, None, progress, generator, negatives=negatives)
        return self._finish(tokens, return_tokens)

    def _loop_tokens(self, tokens: torch.Tensor, descriptions: tp.List[tp.Optional[str]],
                     negatives: tp.Optional[tp.List[tp.Optional[str]]], seam: float,
                     generator: tp.Optional[torch.Generator]) -> torch.Tensor:
        """Close the loop: rotate the clip so that its end and start meet in the middle, regenerate `seam`
        seconds there (whole spans) with both sides as context, rotate back."""
        T = tokens.shape[-1]
        span = self.cfg.span_len
        if isinstance(seam, bool) or not isinstance(seam, (int, float)) or not 0 < seam * self.frame_rate < T - span:
            raise ValueError(f"loop_seam must be between one frame and the clip's length ({T / self.frame_rate:g} s), "
                             f"got {seam!r}")
        shift = (T // 2) // span * span
        half = max(span, int(round(seam * self.frame_rate / 2)) // span * span)
        keep = torch.ones(T, dtype=torch.bool)
        keep[max(0, shift - half):min(T, shift + half)] = False
        rotated = torch.roll(tokens, shifts=shift, dims=-1)  # frame 0 now at `shift`, frame T-1 just before it
        closed = self._generate_tokens(descriptions, None, False, generator, negatives=negatives,
                                       infill=(rotated, keep), check_collapse=False)
        return torch.roll(closed, shifts=-shift, dims=-1)

    def decode_loop(self, tokens: torch.Tensor) -> torch.Tensor:
        """Audio of one period of the clip repeated: the middle of three copies decoded together, so that the
        codec sees the wrap on both sides."""
        T = tokens.shape[-1]
        audio = self.generate_audio(torch.cat([tokens, tokens, tokens], dim=-1))
        hop = audio.shape[-1] // (3 * T)
        return audio[..., T * hop:2 * T * hop]

    def generate_unconditional(self, num_samples: int, progress: bool = False, return_tokens: bool = False,
                               generator: tp.Optional[torch.Generator] = None):
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        tokens = self._generate_tokens([None] * num_samples, None, progress, generator)
        return self._finish(tokens, return_tokens)

    def generate_continuation(self, prompt: torch.Tensor, prompt_sample_rate: int,
                              descriptions: tp.Optional[tp.List[tp.Optional[str]]] = None,
                              progress: bool = False, return_tokens: bool = False,
                              generator: tp.Optional[torch.Generator] = None,
                              negative_descriptions: tp.Optional[tp.List[tp.Optional[str]]] = None):
        """Continue prompt audio [C, T] or [B, C, T] (resampled and down-mixed to the model's
        format, as the reference does), optionally guided by descriptions (and negative_descriptions, as in
        `generate`)."""
        check_generator(generator, self.device)  # before the codec's work on the prompt
        prompt = self._prepare_prompt(prompt, prompt_sample_rate)
        descriptions = per_item_descriptions(descriptions, prompt.shape[0], "prompts")
        prompt_tokens = self._encode(prompt)
        negatives = check_negatives(negative_descriptions, len(descriptions))
        tokens = self._generate_tokens(descriptions, prompt_tokens, progress, generator, negatives=negatives)
        return self._finish(tokens, return_tokens)

    def _encode(self, wav: torch.Tensor) -> torch.Tensor:
        """The codec's codes [B, K, T] of wav [B, C, T] (at the model's rate), on the LM's device."""
        with torch.inference_mode():
            codes = self.compression_model.encode(wav.to(self._codec_device))
        return (codes[0] if isinstance(codes, tuple) else codes).to(self.device)

    def generate_infill(self, audio: torch.Tensor, sample_rate: int,
                        regions: tp.Sequence[tp.Tuple[float, float]],
                        descriptions: tp.Optional[tp.List[tp.Optional[str]]] = None, progress: bool = False,
                        return_tokens: bool = False, generator: tp.Optional[torch.Generator] = None,
                        negative_descriptions: tp.Optional[tp.List[tp.Optional[str]]] = None,
                        crossfade: tp.Optional[float] = None):
        """Regenerate the time regions [(start_s, end_s), ...] of audio [C, T] or [B, C, T] (at most the
        model's window long), with the rest fixed as context on both sides, optionally guided by descriptions.

        The audio is encoded; the frames of each region (widened to whole 3-frame spans) are masked and decoded,
        every other frame keeps the input's codes exactly. The result is the codec's decoding of those codes, at
        the input's length (resampled to the model's rate). crossfade=None returns it as it is; crossfade=s puts
        the original waveform back outside the regions, with linear cross-fades of s seconds at the edges."""
        check_generator(generator, self.device)
        wav = self._prepare_audio(audio, sample_rate, "audio", allow_full=True)
        keep = infill_keep(regions, wav.shape[-1] / self.sample_rate, self.frame_rate, self.cfg.span_len,
                           math.ceil(wav.shape[-1] / self.sample_rate * self.frame_rate))
        descriptions = per_item_descriptions(descriptions, wav.shape[0], "clips")
        negatives = check_negatives(negative_descriptions, len(descriptions))
        if crossfade is not None and not (isinstance(crossfade, (int, float)) and crossfade >= 0):
            raise ValueError(f"crossfade must be a number of seconds >= 0 (or None), got {crossfade!r}")
        given = self._encode(wav)
        keep = keep[:given.shape[-1]]
        if keep.shape[0] < given.shape[-1]:
            keep = torch.cat([keep, torch.ones(given.shape[-1] - keep.shape[0], dtype=torch.bool)])
        tokens = self._generate_tokens(descriptions, None, progress, generator, negatives=negatives,
                                       infill=(given, keep))
        if tokens.shape[-1] < given.shape[-1]:  # 'nonoverlap' trims to whole spans: the tail keeps its codes
            tokens = torch.cat([tokens, given[..., tokens.shape[-1]:]], dim=-1)
        out = self.generate_audio(tokens)[..., :wav.shape[-1]]
        if self.params.remove_dc:  # before the cross-fade: the original audio outside the regions stays as given
            out = remove_dc(out, self.sample_rate)
        if crossfade is not None:
            out = crossfade_regions(wav.to(out.device), out, regions, self.sample_rate, crossfade)
        return (out, tokens) if return_tokens else out

    def generate_audio(self, tokens: torch.Tensor) -> torch.Tensor:
        """Decode tokens [B, K, T] into audio [B, C, T * hop], on the tokens' device (the codec may run
        elsewhere, see `codec_device`). Up to the model's window in one pass (as audiocraft); past it in chunks of
        one window, each decoded with DECODE_CONTEXT frames of context on both sides and cut back to its own
        frames, so memory stays that of one window whatever the length (the codec's receptive field and LSTM
        state settle within that context: on the bundled model the two ways differ by 133 dB below the signal
        for 30 s of rendered music, 77 dB for steady tones, whose LSTM state settles slowest)."""
        window = max(1, int(self.max_duration * self.frame_rate))
        total = tokens.shape[-1]
        with torch.inference_mode():
            codes = tokens.to(self._codec_device)
            if total <= window:
                return self.compression_model.decode(codes).float().to(tokens.device)
            pieces = []
            for start in range(0, total, window):
                end = min(total, start + window)
                first, last = max(0, start - DECODE_CONTEXT), min(total, end + DECODE_CONTEXT)
                audio = self.compression_model.decode(codes[..., first:last]).float()
                hop = audio.shape[-1] // (last - first)
                pieces.append(audio[..., (start - first) * hop:(end - first) * hop].to(tokens.device))
            return torch.cat(pieces, dim=-1)

    @property
    def _codec_device(self) -> torch.device:
        """Where the codec's weights are (the CPU for a model on MPS before macOS 15.1, see `codec_device`)."""
        weight = next(self.compression_model.parameters(), None)
        return self.device if weight is None else weight.device

    # -------------------------------------------------------------------------------- internals
    def _prepare_prompt(self, prompt: tp.Any, prompt_sample_rate: tp.Any) -> torch.Tensor:
        return self._prepare_audio(prompt, prompt_sample_rate, "prompt")

    def _prepare_audio(self, prompt: tp.Any, prompt_sample_rate: tp.Any, what: str,
                       allow_full: bool = False) -> torch.Tensor:
        """Audio [C, T] or [B, C, T] checked and converted to the model's rate and channels. A prompt must be
        shorter than the generated length; infill audio may fill the whole window (allow_full)."""
        if not isinstance(prompt, torch.Tensor):
            raise TypeError(f"{what} must be a torch.Tensor shaped [C, T] or [B, C, T], got {type(prompt).__name__}")
        if prompt.dim() == 2:
            prompt = prompt[None]
        if prompt.dim() != 3:
            raise ValueError(f"{what} must be shaped [C, T] or [B, C, T], got {list(prompt.shape)}")
        if not prompt.is_floating_point():
            raise TypeError(f"{what} must be floating point audio, got dtype {prompt.dtype}; convert int16 PCM "
                            f"with wav.float() / 32768")
        rate_name = "prompt_sample_rate" if what == "prompt" else "sample_rate"
        if isinstance(prompt_sample_rate, bool) or not isinstance(prompt_sample_rate, (int, float)) \
                or not 1 <= prompt_sample_rate < math.inf:
            raise ValueError(f"{rate_name} must be a number of Hz, at least 1, got {prompt_sample_rate!r}")
        if prompt.shape[-1] == 0 or prompt.shape[0] == 0:
            raise ValueError(f"the {what} is empty (shape {list(prompt.shape)}): give at least one clip of one sample"
                             + (", or use generate()" if what == "prompt" else ""))
        seconds = prompt.shape[-1] / prompt_sample_rate
        if allow_full:
            limit = self.max_duration
            if prompt.shape[-1] == 0 or seconds * self.frame_rate > int(limit * self.frame_rate):
                raise ValueError(f"the {what} is {seconds:.2f} s long but this model's window is {limit:g} s: "
                                 f"give between one frame and {limit:g} s of audio")
        else:
            limit = self.duration
            if seconds * self.frame_rate >= int(limit * self.frame_rate):
                raise ValueError(f"the {what} is {seconds:.2f} s long but this model generates {limit:g} s: "
                                 f"trim the {what} to less than {limit:g} s")
        if not torch.isfinite(prompt).all():
            raise ValueError(f"the {what} holds NaN or inf samples; clean the audio first")
        prompt = convert_audio(prompt.float(), prompt_sample_rate, self.sample_rate, self.audio_channels)
        if prompt.shape[-1] == 0:
            raise ValueError(f"the {what} is shorter than one sample at {self.sample_rate} Hz ({seconds:.2g} s): give "
                             f"a longer {what}" + (", or use generate()" if what == "prompt" else ""))
        return prompt.to(self.device)

    def _generate_tokens(self, descriptions: tp.List[tp.Optional[str]], prompt_tokens: tp.Optional[torch.Tensor],
                         progress: bool, generator: tp.Optional[torch.Generator],
                         negatives: tp.Optional[tp.List[tp.Optional[str]]] = None,
                         infill: tp.Optional[tp.Tuple[torch.Tensor, torch.Tensor]] = None,
                         frames: tp.Optional[int] = None, check_collapse: bool = True) -> torch.Tensor:
        """check_collapse=False: a part of a generation (a window past the first, a loop's seam), whose caller
        checks the whole once."""
        check_generator(generator, self.device)
        if infill is not None:
            seq_len = infill[0].shape[-1]
        elif frames is not None:  # one window of a long generation
            seq_len = frames
        else:
            duration = self.duration
            if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not math.isfinite(duration) \
                    or duration <= 0:
                raise ValueError(f"duration must be a positive number of seconds, got {duration!r}: set "
                                 f"model.duration (e.g. {self.max_duration:g}, or more for several windows)")
            seq_len = int(duration * self.frame_rate)  # generate_tokens refuses a prompt this long
            if seq_len < 1:
                raise ValueError(f"duration {duration:g} s is shorter than one frame ({1 / self.frame_rate:g} s)")
            if seq_len > int(self.max_duration * self.frame_rate):
                return self._generate_long(descriptions, prompt_tokens, seq_len, progress, generator, negatives)
        callback = None
        if progress:
            callback = self._progress_callback or _print_progress
        with torch.inference_mode():
            cond = self.conditioner.cfg_condition(descriptions, negatives)
            logits_fn = guided_logits_fn(self.lm, cond, len(descriptions))
            try:
                tokens = generate_tokens(logits_fn, len(descriptions), seq_len, self.cfg.n_q, self.cfg.card,
                                         self.params, span_len=self.cfg.span_len, prompt=prompt_tokens,
                                         device=self.device, generator=generator, callback=callback, infill=infill)
            finally:
                self.forward_passes += logits_fn.passes
        if not check_collapse:
            return tokens
        made = torch.ones(tokens.shape[-1], dtype=torch.bool)  # the frames this call sampled: only those can collapse
        if infill is not None:
            made = ~infill[1][:tokens.shape[-1]].cpu()
        elif prompt_tokens is not None:
            made[:prompt_tokens.shape[-1]] = False
        warn_if_collapsed(tokens[..., made.to(tokens.device)], params=self.params)
        return tokens

    def extend_plan(self, total: int) -> tp.List[tp.Tuple[int, int]]:
        """[(prompt frames, window frames)] of the windows that make `total` frames: the first window is
        full and unprompted, each next one is prompted with the last (window - stride) frames made so far."""
        window = int(self.max_duration * self.frame_rate)
        stride = self.max_duration / 2 if self.extend_stride is None else self.extend_stride
        if isinstance(stride, bool) or not isinstance(stride, (int, float)) or not 0 < stride < self.max_duration:
            raise ValueError(f"extend_stride must be between 0 and the window ({self.max_duration:g} s), exclusive, "
                             f"got {stride!r}")
        overlap = window - max(1, int(stride * self.frame_rate))
        plan, made = [(0, window)], window
        while made < total:
            length = min(window, overlap + total - made)
            plan.append((overlap, length))
            made += length - overlap
        return plan

    def _generate_long(self, descriptions: tp.List[tp.Optional[str]], prompt_tokens: tp.Optional[torch.Tensor],
                       total: int, progress: bool, generator: tp.Optional[torch.Generator],
                       negatives: tp.Optional[tp.List[tp.Optional[str]]]) -> torch.Tensor:
        """`total` frames in overlapping windows (see `extend_plan`); a continuation prompt starts the first.
        A window that 'nonoverlap' trims to whole spans adds a little less; the loop runs until `total`."""
        plan = self.extend_plan(total)
        window, overlap = plan[0][1], plan[1][0]
        steps = self.params.total_steps
        callback = (self._progress_callback or _print_progress) if progress else None
        made: tp.Optional[torch.Tensor] = None
        index = 0
        while made is None or made.shape[-1] < total:
            length = window if made is None else min(window, max(overlap + 3, overlap + total - made.shape[-1]))
            prompt = prompt_tokens if made is None else made[..., made.shape[-1] - overlap:]

            def report(step: int, _total: int, index: int = index) -> None:
                callback(index * steps + step, max(len(plan), index + 1) * steps)

            with self._progress_to(report if callback is not None else None):
                chunk = self._generate_tokens(descriptions, prompt, progress, generator, negatives, frames=length,
                                              check_collapse=False)
            made = chunk if made is None else torch.cat([made, chunk[..., overlap:]], dim=-1)
            index += 1
        made = made[..., :total]
        given = 0 if prompt_tokens is None else prompt_tokens.shape[-1]
        warn_if_collapsed(made[..., given:], params=self.params)  # once for the whole clip, not once per window
        return made

    @contextlib.contextmanager
    def _progress_to(self, callback: tp.Optional[tp.Callable[[int, int], None]]):
        saved = self._progress_callback
        self._progress_callback = callback or saved
        try:
            yield
        finally:
            self._progress_callback = saved

    def _finish(self, tokens: torch.Tensor, return_tokens: bool):
        audio = self.generate_audio(tokens)
        if self.params.remove_dc:
            audio = remove_dc(audio, self.sample_rate)
        return (audio, tokens) if return_tokens else audio


def check_negatives(negatives: tp.Any, count: int) -> tp.Optional[tp.List[tp.Optional[str]]]:
    """None, or one negative text (or None) per description."""
    if negatives is None:
        return None
    negatives = check_descriptions(negatives)
    if len(negatives) != count:
        raise ValueError(f"got {len(negatives)} negative descriptions for {count} descriptions: pass one (or None) "
                         f"per description")
    return negatives


def infill_keep(regions: tp.Any, seconds: float, frame_rate: float, span_len: int, frames: int) -> torch.Tensor:
    """Boolean [frames]: True for the frames kept, False for those of the regions (start_s, end_s), each widened
    to whole spans of span_len frames. One-line errors for regions that are empty, outside the audio, overlap
    or cover everything."""
    if not isinstance(regions, (list, tuple)) or not regions:
        raise ValueError("regions must be a non-empty list of (start_s, end_s) pairs, e.g. [(3.0, 5.5)]")
    keep = torch.ones(frames, dtype=torch.bool)
    spans = []
    for i, region in enumerate(regions):
        if not isinstance(region, (list, tuple)) or len(region) != 2 or \
                not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in region):
            raise ValueError(f"regions[{i}] must be a (start_s, end_s) pair of numbers, got {region!r}")
        start, end = float(region[0]), float(region[1])
        if end <= start:
            raise ValueError(f"region {i} ({start:g}-{end:g} s) is empty: its end must come after its start")
        if start < 0 or end > seconds + 1e-9:
            raise ValueError(f"region {i} ({start:g}-{end:g} s) is outside the audio (0-{seconds:.2f} s)")
        spans.append((start, end, i))
    spans.sort()
    for (s0, e0, i0), (s1, e1, i1) in zip(spans, spans[1:]):
        if s1 < e0:
            raise ValueError(f"regions {i0} ({s0:g}-{e0:g} s) and {i1} ({s1:g}-{e1:g} s) overlap: merge them")
    for start, end, _ in spans:
        first = int(math.floor(start * frame_rate)) // span_len * span_len
        last = min(frames, -(-int(math.ceil(end * frame_rate)) // span_len) * span_len)
        keep[first:last] = False
    if not bool(keep.any()):
        raise ValueError("the regions cover the whole audio: leave some of it as context (or use generate)")
    return keep


def crossfade_regions(original: torch.Tensor, generated: torch.Tensor, regions: tp.Sequence[tp.Tuple[float, float]],
                      sample_rate: int, seconds: float) -> torch.Tensor:
    """original outside the regions, generated inside, with linear cross-fades of `seconds` centred on each
    region edge (both [B, C, T])."""
    T = generated.shape[-1]
    weight = torch.zeros(T, dtype=generated.dtype, device=generated.device)  # 1 = generated
    half = seconds * sample_rate / 2
    t = torch.arange(T, device=generated.device, dtype=torch.float64)
    for start, end in regions:
        a, b = start * sample_rate, end * sample_rate
        if half > 0:
            rise = ((t - (a - half)) / (2 * half)).clamp(0, 1)
            fall = (((b + half) - t) / (2 * half)).clamp(0, 1)
        else:
            rise, fall = (t >= a).double(), (t < b).double()
        weight = torch.maximum(weight, torch.minimum(rise, fall).to(weight.dtype))
    return original[..., :T] * (1 - weight) + generated * weight


DECODE_CONTEXT = 100  # frames of context each side of a chunk when decoding past the window (2 s at 50 Hz)
COLLAPSE_SHARE = 0.3  # one code filling more of a stage than this is a collapse worth a warning
COLLAPSE_MIN_FRAMES = 25  # fewer sampled frames than this (0.5 s at 50 Hz) say nothing about a collapse


class SamplingCollapsed(RuntimeWarning):
    """One code filled more than the threshold of some stage's frames in a generated clip: the sampling collapsed
    onto few codes and the audio drones. `shares` {codebook: share of its commonest code, worst clip}; the remedies
    named are those not already in force under `params` (the settings the generation used). str() says them in
    the API's words; `describe(flags)` in a face's (the command line passes its flags)."""

    def __init__(self, shares: tp.Dict[int, float], threshold: float, params: tp.Optional[GenerationParams] = None):
        self.shares, self.threshold, self.params = dict(shares), threshold, params
        super().__init__(self.describe())

    def remedies(self) -> tp.List[tp.Tuple[str, float, float]]:
        """[(setting, value to try, value now)], two at most and none already in force: openmagnet's re-masking
        noise when it is off, a weaker guidance (half the max CFG, while above 1), a higher temperature (x1.5),
        more re-masking noise (x2). On the demo model ("slow ambient pad", seeds 1 and 11, its stored CFG 3,
        temperature 3 and noise 3: codebook 0's commonest code 62-66%), CFG 1.5 brought it to 30-34%,
        temperature 4.5 to 27-36%, noise 6 to 42-44%."""
        p = self.params or GenerationParams()
        found = [("remask_noise", 3.0, 0.0)] if p.remask_noise == 0 else []
        if p.max_cfg_coef > 1:
            found.append(("max_cfg_coef", max(1.0, round(p.max_cfg_coef / 2, 2)), p.max_cfg_coef))
        if p.use_sampling and p.temperature > 0:
            found.append(("temperature", round(p.temperature * 1.5, 2), p.temperature))
        if p.remask_noise > 0:
            found.append(("remask_noise", 2 * p.remask_noise, p.remask_noise))
        return found[:2]

    def describe(self, flags: tp.Optional[tp.Mapping[str, str]] = None) -> str:
        """The warning's sentence; `flags` maps set_generation_params() names to a face's (e.g. '--remask-noise')."""
        worst = ", ".join(f"codebook {k}: {share:.0%}" for k, share in self.shares.items())
        tries = " or ".join((f"{flags[name]} {value:g}" if flags else f"{name}={value:g}") + f" (now {now:g})"
                            for name, value, now in self.remedies())
        return (f"the sampling collapsed: one code fills more than {self.threshold:.0%} of the frames ({worst}); "
                f"try {tries}" + ("" if flags else " with set_generation_params"))


def warn_if_collapsed(tokens: torch.Tensor, threshold: float = COLLAPSE_SHARE,
                      params: tp.Optional[GenerationParams] = None) -> tp.List[int]:
    """Warn (SamplingCollapsed, a RuntimeWarning) when, in some generated clip, one code fills more than
    `threshold` of a stage's frames: the sampling collapsed onto few codes and the audio drones. tokens [B, K, T]:
    the sampled frames only (not a prompt's or the kept frames of an infill, which are the input's), of a whole
    generation (one warning, however many windows made it). `params`: the settings it used, so that the warning
    names a remedy not already in force. Returns the collapsed stages; none for fewer than COLLAPSE_MIN_FRAMES
    frames."""
    if tokens.shape[-1] < COLLAPSE_MIN_FRAMES:
        return []
    share = top_code_share(tokens).amax(0)  # [K], the worst clip per stage
    stages = [k for k, s in enumerate(share.tolist()) if s > threshold]
    if stages:
        warnings.warn(SamplingCollapsed({k: float(share[k]) for k in stages}, threshold, params), stacklevel=4)
    return stages


_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
           "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16,
           "half": torch.float16}


def _parse_dtype(dtype: tp.Union[str, torch.dtype]) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype}")
        return dtype
    if isinstance(dtype, str) and dtype.lower() in _DTYPES:
        return _DTYPES[dtype.lower()]
    raise ValueError(f"dtype must be one of float32, bfloat16, float16; got {dtype!r}")
