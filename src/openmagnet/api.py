"""MAGNeT: the user-facing model, with the seed's API (audiocraft models/magnet.py + genmodel.py).

    model = MAGNeT.get_pretrained('facebook/magnet-small-10secs')
    model.set_generation_params(decoding_steps=[20, 10, 10, 10], span_arrangement='stride1')
    wav = model.generate(['happy rock'])            # [B, 1, samples] float32 at model.sample_rate

The facade: loading and saving delegate to the checkpoint modules, each generate* method builds a generation
request (request.py) with the model's settings and runs it; the modes themselves are in modes.py, the device and
dtype decisions in runtime.py.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import typing as tp
from pathlib import Path

import torch

from .checkpoint import load_model, push_model, save_model
from .codec import decode_chunked
from .conditioners import make_conditioner
from .config import GenerationParams, LMConfig, TextConfig, generation_params, recommended_params, \
    reference_keywords
from .lm import MagnetLM
from .modes import extend_plan
from .request import Request, window_stride
from .request import run as run_request
from .runtime import FastMode, codec_device, describe_lm, load_plan
from .runtime import deterministic  # noqa: F401 - the README's openmagnet.api.deterministic()


PathLike = tp.Union[str, os.PathLike]
logger = logging.getLogger("openmagnet")


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
        plan = load_plan(device, dtype, quantize, fast, fast_recheck, compile, banded_attention)  # before loading
        loaded = load_model(name, device=plan.device, dtype=plan.dtype, codec_device=codec_device(plan.device),
                            codec=codec, text_encoder=text_encoder, quantize=quantize, mode=plan.mode,
                            measure=plan.measure, fast_recheck=fast_recheck, banded_attention=plan.banded_attention,
                            compile=compile)
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
        return describe_lm(self.lm)

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
        return reference_keywords(self.params)

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
        if temp is not None and temperature != 3.0 and temperature != temp:
            raise TypeError(f"set_generation_params() got temperature={temperature!r} and temp={temp!r}: "
                            f"give one (temp is generation_params' name for temperature)")
        self.params = generation_params(
            use_sampling=use_sampling, top_k=top_k, top_p=top_p, temperature=temperature if temp is None else temp,
            max_cfg_coef=max_cfg_coef, min_cfg_coef=min_cfg_coef, decoding_steps=decoding_steps,
            span_arrangement=span_arrangement, remask_noise=remask_noise, remove_dc=remove_dc, speed=speed,
            guidance_every=guidance_every, fine_step_share=fine_step_share, confidence_stop=confidence_stop)

    def recommended_params(self, **given: tp.Any) -> dict:
        """set_generation_params() keywords for this model: its own stored settings where it has them
        (the bundled demo model), else what the audiocraft demos recommend for its kind
        (`config.recommended_params`); each of `given` that is not None replaces its value."""
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
        loop: make a clip that repeats without a seam (see `modes.loop`): after the generation, `loop_seam`
        seconds around the wrap point are regenerated with the clip's end and start as their context, and the
        audio is decoded as one period of the repeated clip. A loop is at most one window long."""
        return self._run(Request(prompts=descriptions, negatives=negative_descriptions, mode="loop" if loop else "text",
                                 loop_seam=loop_seam), progress, generator, return_tokens)

    def generate_unconditional(self, num_samples: int, progress: bool = False, return_tokens: bool = False,
                               generator: tp.Optional[torch.Generator] = None):
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        return self._run(Request(prompts=[None] * num_samples), progress, generator, return_tokens)

    def generate_continuation(self, prompt: torch.Tensor, prompt_sample_rate: int,
                              descriptions: tp.Optional[tp.List[tp.Optional[str]]] = None,
                              progress: bool = False, return_tokens: bool = False,
                              generator: tp.Optional[torch.Generator] = None,
                              negative_descriptions: tp.Optional[tp.List[tp.Optional[str]]] = None):
        """Continue prompt audio [C, T] or [B, C, T] (resampled and down-mixed to the model's
        format, as the reference does), optionally guided by descriptions (and negative_descriptions, as in
        `generate`)."""
        return self._run(Request(prompts=descriptions, negatives=negative_descriptions, audio=prompt,
                                 audio_rate=prompt_sample_rate, mode="continue"), progress, generator, return_tokens)

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
        return self._run(Request(prompts=descriptions, negatives=negative_descriptions, audio=audio,
                                 audio_rate=sample_rate, mode="edit", regions=regions, crossfade=crossfade),
                         progress, generator, return_tokens)

    def _run(self, request: Request, progress: bool, generator: tp.Optional[torch.Generator], return_tokens: bool):
        """A generate* call as a request with the model's settings (params, duration, extend_stride, progress)."""
        callback = (self._progress_callback or _print_progress) if progress else None
        result = run_request(self, dataclasses.replace(request, params=self.params, duration=self.duration,
                                                       extend_stride=self.extend_stride, generator=generator,
                                                       progress=callback))
        return (result.audio, result.tokens) if return_tokens else result.audio

    def extend_plan(self, total: int) -> tp.List[tp.Tuple[int, int]]:
        """[(prompt frames, window frames)] of the windows that make `total` frames (`modes.extend_plan`, with this
        model's window and extend_stride)."""
        return extend_plan(int(self.max_duration * self.frame_rate), window_stride(self, self.extend_stride), total)

    def generate_audio(self, tokens: torch.Tensor) -> torch.Tensor:
        """Decode tokens [B, K, T] into audio [B, C, T * hop], on the tokens' device (the codec may run elsewhere,
        see `codec_device`): up to the model's window in one pass (as audiocraft), past it one window at a time
        with context on both sides (`codec.decode_chunked`)."""
        window = int(self.max_duration * self.frame_rate)
        return decode_chunked(self.compression_model, tokens.to(self.codec_device), window).to(tokens.device)

    def decode_loop(self, tokens: torch.Tensor) -> torch.Tensor:
        """Audio of one period of the clip repeated: the middle of three copies decoded together, so that the
        codec sees the wrap on both sides."""
        T = tokens.shape[-1]
        audio = self.generate_audio(torch.cat([tokens, tokens, tokens], dim=-1))
        hop = audio.shape[-1] // (3 * T)
        return audio[..., T * hop:2 * T * hop]

    @property
    def codec_device(self) -> torch.device:
        """Where the codec's weights are (the CPU for a model on MPS before macOS 15.1, see `runtime.codec_device`)."""
        weight = next(self.compression_model.parameters(), None)
        return self.device if weight is None else weight.device
