"""MagnetForConditionalGeneration: a MAGNeT model as a transformers `PreTrainedModel` (after transformers'
MusicgenForConditionalGeneration: a text encoder, an audio codec and a decoder in one model).

It is a face over openmagnet's own modules, not a second implementation:

    text_encoder   transformers' T5EncoderModel (or the demo's BertModel), frozen, float32
    audio_encoder  openmagnet's EncodecModel (codec/encodec.py), or transformers' EncodecModel behind
                   openmagnet's HFEncodec wrapper (codec/hf.py)
    decoder        openmagnet's MagnetLM (lm.py), its keys those of audiocraft's checkpoints

`generate(input_ids, attention_mask, ...)` encodes the text with `text_encoder`, projects it as openmagnet's
conditioner does (conditioners.project_text) and hands the condition to openmagnet's MAGNeT (api.py: the masked
decoding of decoding.py, classifier-free guidance, continuation, generation past the window), so the tokens and the
audio are those of `MAGNeT.generate` for the same seed and settings. Settings come from the model's
`generation_config` (do_sample, temperature, top_k, top_p and MAGNeT's decoding_steps, span_arrangement,
max_cfg_coef, min_cfg_coef, remask_noise, remove_dc and the speed settings), then a `generation_config`
argument, then keywords.

Loading is strict: `from_pretrained` refuses a folder whose tensors are missing, unexpected or mis-shaped, with one
line naming them.
"""
from __future__ import annotations

import dataclasses
import json
import typing as tp
from pathlib import Path

import torch
from transformers import AutoModel, EncodecConfig, GenerationConfig, GenerationMixin, PreTrainedModel, T5EncoderModel
from transformers import EncodecModel as HFEncodecModel
from transformers.utils import ModelOutput

from ..api import MAGNeT
from ..checkpoint import CheckpointError
from ..codec import EncodecModel, HFEncodec
from ..conditioners import project_text
from ..config import GenerationParams, TextConfig, show
from ..lm import MagnetLM
from .configuration import AUDIOCRAFT_CODEC, HF_CODEC, MagnetConfig, check_model_type, sub_config

# generate() keywords: MAGNeT's settings (GenerationParams names, do_sample for use_sampling) ...
# (transformers' own names first, then every other GenerationParams field: a new setting needs no edit here)
_SAMPLING = ("temperature", "top_k", "top_p")
SETTINGS = ("do_sample",) + _SAMPLING + tuple(
    f.name for f in dataclasses.fields(GenerationParams) if f.name not in ("use_sampling",) + _SAMPLING)
# ... its inputs (what MagnetProcessor returns) ...
INPUTS = ("input_ids", "attention_mask", "negative_input_ids", "negative_attention_mask", "input_values",
          "padding_mask")
# ... and the rest: `duration` in seconds (default the window; more generates window by window), a torch.Generator,
# the pipeline's return_dict_in_generate, and pad_token_id (the padding is read from the attention mask)
OPTIONS = ("generation_config", "generator", "duration", "return_dict_in_generate", "pad_token_id")
LENGTH_KEYWORDS = ("max_new_tokens", "max_length", "min_new_tokens", "min_length")
# GenerationConfig fields that say nothing MAGNeT must act on
NEUTRAL_FIELDS = {"pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id", "return_dict_in_generate",
                  "transformers_version", "_from_model_config", "max_length"}


@dataclasses.dataclass
class MagnetGenerateOutput(ModelOutput):
    """What `generate(..., return_dict_in_generate=True)` returns (and what the text-to-audio pipeline reads):

    audio      [B, C, L] float32 waveforms at `config.sampling_rate`
    sequences  [B, K, T] the codec's codes they decode from
    """
    audio: tp.Optional[torch.Tensor] = None
    sequences: tp.Optional[torch.Tensor] = None


class EncodedText:
    """A conditioner whose descriptions were already tokenized (MagnetProcessor) and encoded: what MAGNeT's
    decoding asks a conditioner for, the guidance condition [2B, S, D] (conditional rows, then null or negative
    rows), given once for the whole generation."""

    def __init__(self, condition: torch.Tensor, projection: torch.nn.Linear):
        self.condition = condition
        self.projection = projection

    def cfg_condition(self, descriptions: tp.Sequence[tp.Optional[str]],
                      negatives: tp.Optional[tp.Sequence[tp.Optional[str]]] = None) -> torch.Tensor:
        if len(descriptions) * 2 != self.condition.shape[0]:
            raise ValueError(f"the condition holds {self.condition.shape[0] // 2} rows, not {len(descriptions)}")
        return self.condition


def build_text_encoder(config: MagnetConfig) -> torch.nn.Module:
    text = config.text_encoder_config
    if config.text_encoder_kind == "t5":
        return T5EncoderModel(text)
    return AutoModel.from_config(text)


def build_audio_encoder(config: MagnetConfig) -> torch.nn.Module:
    kind = config.audio_encoder.get("model_type")
    if kind == AUDIOCRAFT_CODEC:
        return EncodecModel(config.codec_config)
    if kind == HF_CODEC:
        codec_config = sub_config(config.audio_encoder, "audio_encoder")
        if not isinstance(codec_config, EncodecConfig):
            raise ValueError(f"audio_encoder: expected an EncodecConfig, got {type(codec_config).__name__}")
        return HFEncodecModel(codec_config)
    raise ValueError(f"audio_encoder.model_type {show(kind)} is neither {HF_CODEC!r} nor {AUDIOCRAFT_CODEC!r}")


class MagnetForConditionalGeneration(PreTrainedModel, GenerationMixin):
    """MAGNeT (text encoder, codec, masked decoder) as a transformers model; see the module docstring."""

    config_class = MagnetConfig
    base_model_prefix = "magnet"
    main_input_name = "input_ids"
    # one device per part: a layer's self- and cross-attention and the codec's convolutions stay together
    _no_split_modules = ["TransformerLayer", "EncodecModel", "T5Block", "BertLayer"]
    # as openmagnet loads a model for a reduced dtype (MagnetLM.weight_dtype): only the transformer's matrices take
    # it; the embeddings, norms, heads, text projection, the text encoder and the codec stay float32
    _keep_in_fp32_modules_strict = ["text_encoder", "audio_encoder", "decoder.emb", "decoder.out_norm",
                                    "decoder.linears", "decoder.condition_provider", "norm1", "norm2", "norm_cross"]

    def __init__(self, config: MagnetConfig, parts: tp.Optional[tp.Tuple[torch.nn.Module, ...]] = None):
        """parts: (text encoder, codec, MagnetLM) already loaded, which the model then holds (conversion.py);
        by default they are built from the config."""
        config.check()
        super().__init__(config)
        # the settings the model stores over MAGNeT's API defaults (from_pretrained reads generation_config.json)
        self.generation_config = generation_config_for(GenerationParams(**(config.stored_generation or {})),
                                                       config.lm_config.seq_len,
                                                       config.text_encoder_config.pad_token_id)
        if parts is None:
            parts = (build_text_encoder(config), build_audio_encoder(config), MagnetLM(config.lm_config))
        self.text_encoder, self.audio_encoder, self.decoder = parts
        self.post_init()

    def _init_weights(self, module: torch.nn.Module) -> None:
        """A model made from a config alone (not loaded): openmagnet's modules keep the initialisation their
        constructors gave (which transformers' generic one would not know for the packed attention matrices and the
        codebooks); the text encoder and transformers' EnCodec initialise themselves."""
        return

    # ------------------------------------------------------------------------------------------ parts
    @property
    def codec(self) -> torch.nn.Module:
        """The codec behind openmagnet's codec interface (encode / decode, sample_rate, frame_rate, channels)."""
        if isinstance(self.audio_encoder, HFEncodecModel):
            return HFEncodec(self.audio_encoder)
        return self.audio_encoder

    @property
    def text_config(self) -> TextConfig:
        return TextConfig(name=self.config.text_encoder_name, dim=self.config.lm_config.text_dim,
                          kind=self.config.text_encoder_kind)

    def to_magnet(self, conditioner: tp.Any = None) -> MAGNeT:
        """openmagnet's MAGNeT over the same modules (no weights copied): its settings those this model stores
        (config.decoder.generation), its configs those it came with (config.audiocraft)."""
        audiocraft = self.config.audiocraft or {}
        return MAGNeT(str(self.config.name_or_path or "transformers"), self.decoder, self.text_config, self.codec,
                      conditioner=conditioner, generation=self.config.stored_generation,
                      xp_cfg=audiocraft.get("lm", {}).get("xp.cfg"),
                      codec_cfg=audiocraft.get("compression_model"))

    def forward(self, *args, **kwargs):
        raise NotImplementedError("MAGNeT decodes a whole window by iterative masked decoding: call generate(), or "
                                  "use model.decoder (openmagnet's MagnetLM) for the logits of one step")

    # ------------------------------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate(self, input_ids: tp.Optional[torch.Tensor] = None, attention_mask: tp.Optional[torch.Tensor] = None,
                 **kwargs: tp.Any) -> tp.Union[torch.Tensor, MagnetGenerateOutput]:
        """Audio [B, C, L] for the tokenized texts input_ids / attention_mask [B, S] (MagnetProcessor's output:
        empty texts fully masked), or, with return_dict_in_generate=True, MagnetGenerateOutput(audio, sequences).

        Keywords: MAGNeT's settings (do_sample, temperature, top_k, top_p, decoding_steps, span_arrangement,
        max_cfg_coef, min_cfg_coef, remask_noise, remove_dc, speed, ...), over `generation_config`, over the model's
        own;
        negative_input_ids / negative_attention_mask (the processor's negative_text): the guidance steers away from
        them; input_values [B, C, L] (+ padding_mask): audio to continue, at config.sampling_rate; duration: seconds
        to generate (default the model's window; more goes window by window); generator: a torch.Generator on the
        model's device (else the global RNG, as MAGNeT.generate). max_new_tokens and the other lengths in tokens are
        refused (MAGNeT decodes whole windows: use duration), as is any other keyword."""
        options = self._check_keywords(kwargs)
        params = self._settings(options)
        inputs = {k: options.pop(k) for k in INPUTS[2:] if k in options}
        if input_ids is None and inputs.get("input_values") is None:
            raise ValueError("give input_ids and attention_mask (MagnetProcessor(text=[...])), input_values (audio to "
                             "continue: MagnetProcessor(audio=..., sampling_rate=...)), or both")
        condition, batch = self._condition(input_ids, attention_mask, inputs.get("negative_input_ids"),
                                           inputs.get("negative_attention_mask"), inputs.get("input_values"))
        model = self.to_magnet(conditioner=EncodedText(condition, self.decoder.condition_provider.output_proj))
        model.params = params
        if options.get("duration") is not None:
            model.duration = options["duration"]
        generator = options.get("generator")
        nobody = [None] * batch  # the texts are in the condition
        if inputs.get("input_values") is not None:
            prompt = _unpadded(inputs["input_values"], inputs.get("padding_mask"))
            audio, codes = model.generate_continuation(prompt, self.config.sampling_rate, nobody, return_tokens=True,
                                                       generator=generator)
        else:
            audio, codes = model.generate(nobody, return_tokens=True, generator=generator)
        if options.get("return_dict_in_generate"):
            return MagnetGenerateOutput(audio=audio, sequences=codes)
        return audio

    def _check_keywords(self, kwargs: dict) -> dict:
        for key in LENGTH_KEYWORDS:
            if key in kwargs:
                raise ValueError(f"{key} has no meaning for MAGNeT, which decodes whole windows of "
                                 f"{self.config.lm_config.segment_duration:g} s: give duration=SECONDS instead")
        unknown = sorted(set(kwargs) - set(SETTINGS) - set(INPUTS) - set(OPTIONS))
        if unknown:
            raise TypeError(f"generate() got unknown keyword{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                            f"MAGNeT takes {', '.join(SETTINGS + INPUTS[2:] + OPTIONS)}")
        return dict(kwargs)

    def _settings(self, options: dict) -> GenerationParams:
        """GenerationParams from the model's generation_config, a given generation_config, then keywords."""
        base = dataclasses.asdict(GenerationParams(**(self.config.stored_generation or {})))
        merged = {**base, **settings_of(self.generation_config, self.config.lm_config.seq_len, "the model's")}
        given = options.pop("generation_config", None)
        if given is not None:
            if not isinstance(given, GenerationConfig):
                raise TypeError(f"generation_config must be a transformers GenerationConfig, got "
                                f"{type(given).__name__}")
            merged.update(settings_of(given, self.config.lm_config.seq_len, "generation_config"))
        for key in SETTINGS:
            if key in options:
                merged[_param_name(key)] = options.pop(key)
        try:
            return GenerationParams(**{**merged, "decoding_steps": _steps(merged["decoding_steps"])})
        except ValueError as exc:
            raise ValueError(str(exc).replace("use_sampling", "do_sample")) from None

    def _condition(self, input_ids, attention_mask, negative_ids, negative_mask, input_values):
        """(the guidance condition [2B, S, D], B): the texts' rows, then the null rows (all masked) or the negative
        texts' rows, encoded together as MAGNeT's conditioner encodes them."""
        device = self.decoder.device
        if input_ids is None:  # audio alone: every row has the null condition
            batch = input_values.shape[0] if input_values.dim() == 3 else 1
            input_ids = torch.zeros((batch, 1), dtype=torch.long)
            attention_mask = torch.zeros_like(input_ids)
        input_ids, attention_mask = _check_text(input_ids, attention_mask, "input_ids", "attention_mask")
        batch = input_ids.shape[0]
        if input_values is not None and input_values.dim() == 3 and input_values.shape[0] != batch:
            raise ValueError(f"got {batch} texts for {input_values.shape[0]} audio prompts: give one text (or '') "
                             f"per prompt")
        if negative_ids is None:
            pad = self.config.text_encoder_config.pad_token_id or 0
            null_ids, null_mask = torch.full_like(input_ids, pad), torch.zeros_like(attention_mask)
        else:
            null_ids, null_mask = _check_text(negative_ids, negative_mask, "negative_input_ids",
                                              "negative_attention_mask")
            if null_ids.shape != input_ids.shape:
                raise ValueError(f"negative_input_ids is {list(null_ids.shape)} but input_ids is "
                                 f"{list(input_ids.shape)}: tokenize texts and negative texts together "
                                 f"(MagnetProcessor(text=..., negative_text=...))")
        ids = torch.cat([input_ids, null_ids]).to(device)
        mask = torch.cat([attention_mask, null_mask]).to(device)
        encoder_device = next(self.text_encoder.parameters()).device
        hidden = self.text_encoder(input_ids=ids.to(encoder_device),
                                   attention_mask=mask.to(encoder_device)).last_hidden_state
        return project_text(hidden.float(), mask, self.decoder.condition_provider.output_proj), batch

    # ------------------------------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """transformers' from_pretrained (dtype, device_map, revision, ...), strict: the folder's config.json must be
        a MAGNeT one, and its tensors exactly the model's (a tensor missing, one the model lacks, one of another
        shape: a one-line CheckpointError naming them, before any weight is read)."""
        source = str(pretrained_model_name_or_path)
        want_info = kwargs.pop("output_loading_info", False)
        files = _model_files(source, kwargs)
        if files is not None:
            config = kwargs.get("config")
            if not isinstance(config, MagnetConfig):
                config = MagnetConfig.from_json_file(str(files[0])) if _check_config_file(files[0], source) else None
            check_tensors(cls, config, files[1], source)
        try:
            model, info = super().from_pretrained(pretrained_model_name_or_path, *args, output_loading_info=True,
                                                  **kwargs)
        except RuntimeError as exc:
            if "mismatched" not in str(exc):
                raise
            raise CheckpointError(f"{source}: some tensors have other shapes than the model its config.json describes"
                                  ) from None
        check_loading(info, source)
        return (model, info) if want_info else model


WEIGHTS_FILE, WEIGHTS_INDEX = "model.safetensors", "model.safetensors.index.json"


def _model_files(source: str, kwargs: dict) -> tp.Optional[tp.Tuple[Path, tp.List[Path]]]:
    """(config.json, the safetensors files) of a local folder or a hub repo (fetched through transformers' cache,
    which from_pretrained then reads); None where they cannot be found here (from_pretrained then says why)."""
    from transformers.utils import cached_file

    hub = {k: kwargs[k] for k in ("cache_dir", "revision", "token", "local_files_only", "subfolder") if k in kwargs}
    folder = Path(source).expanduser()
    if folder.is_dir() and not (folder / "config.json").is_file():
        if (folder / "state_dict.bin").is_file() or (folder / "model.safetensors").is_file():
            raise CheckpointError(f"{source} has no config.json: it is a model in audiocraft's or openmagnet's layout, "
                                  f"not a transformers one; convert it with `openmagnet convert --to transformers "
                                  f"{source} DST`, or load it with openmagnet.MAGNeT.from_pretrained")
        return None
    try:
        config = cached_file(source, "config.json", **hub)
        index = cached_file(source, WEIGHTS_INDEX, _raise_exceptions_for_missing_entries=False, **hub)
        if index is None:
            weights = [cached_file(source, WEIGHTS_FILE, **hub)]
        else:
            shards = sorted(set(json.loads(Path(index).read_text(encoding="utf-8"))["weight_map"].values()))
            weights = [cached_file(source, shard, **hub) for shard in shards]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if config is None or None in weights:
        return None
    return Path(config), [Path(w) for w in weights]


def _check_config_file(path: Path, source: str) -> bool:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{source}: cannot read its config.json ({type(exc).__name__}: {exc})") from None
    check_model_type(config, source)
    return True


def check_tensors(cls: type, config: MagnetConfig, files: tp.Sequence[Path], source: str) -> None:
    """The safetensors files must hold exactly the tensors of the model `config` describes (tied copies, e.g. T5's
    input embedding, may be left out), with their shapes; only the files' headers are read."""
    from safetensors import safe_open

    try:
        config.check(source)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    with torch.device("meta"):
        model = cls(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    tied = set(model.all_tied_weights_keys)
    found: tp.Dict[str, tp.Tuple[int, ...]] = {}
    for file in files:
        try:
            with safe_open(str(file), framework="pt") as f:
                found.update({k: tuple(f.get_slice(k).get_shape()) for k in f.keys()})
        except Exception as exc:  # SafetensorError, OSError
            raise CheckpointError(f"{file}: cannot read this safetensors file, it is truncated or corrupt "
                                  f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    problems = []
    missing = sorted(set(expected) - set(found) - tied)
    unexpected = sorted(set(found) - set(expected))
    shaped = [f"{k} is {list(found[k])}, expected {list(expected[k])}" for k in sorted(set(found) & set(expected))
              if found[k] != expected[k]]
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shaped)):
        if keys:
            problems.append(f"{label}: {', '.join(keys[:12])}" + (f" and {len(keys) - 12} more" if len(keys) > 12
                                                                  else ""))
    if problems:
        raise CheckpointError(f"{source} does not match the MAGNeT its config.json describes: " + "; ".join(problems))


def check_loading(info: dict, source: str) -> None:
    """What transformers reports after loading (the remaining case: weights it read from elsewhere than
    safetensors): any tensor missing, unexpected or mis-shaped is a one-line CheckpointError."""
    problems = []
    for key, label in (("missing_keys", "missing"), ("unexpected_keys", "unexpected"),
                       ("mismatched_keys", "mis-shaped")):
        found = sorted(str(k[0] if isinstance(k, tuple) else k) for k in (info.get(key) or ()))
        if found:
            problems.append(f"{label}: {', '.join(found[:12])}" + (f" and {len(found) - 12} more" if len(found) > 12
                                                                   else ""))
    if problems:
        raise CheckpointError(f"{source} does not match the MAGNeT its config.json describes: " + "; ".join(problems))


def settings_of(config: GenerationConfig, frames: int, what: str) -> dict:
    """GenerationParams keywords of a GenerationConfig's MAGNeT fields (those it sets); a field MAGNeT cannot honour
    (num_beams, max_new_tokens, ...) is a one-line ValueError."""
    diff = config.to_diff_dict()
    for key in LENGTH_KEYWORDS:
        value = diff.get(key)
        if value is not None and not (key == "max_length" and value == frames):
            raise ValueError(f"{what} generation_config sets {key}={value}, which has no meaning for MAGNeT (it "
                             f"decodes whole windows): leave it unset and give duration=SECONDS to generate()")
    foreign = sorted(k for k, v in diff.items() if v is not None and k not in SETTINGS and k not in NEUTRAL_FIELDS)
    if foreign:
        raise ValueError(f"{what} generation_config sets {', '.join(foreign)}, which MAGNeT does not use; it takes "
                         f"{', '.join(SETTINGS)}")
    return {_param_name(k): getattr(config, k) for k in SETTINGS if getattr(config, k, None) is not None}


def generation_config_for(params: GenerationParams, frames: int, pad_token_id: tp.Optional[int]) -> GenerationConfig:
    """The GenerationConfig that stores `params`: transformers' names where they exist (do_sample, temperature, top_k,
    top_p; the last three only when sampling), MAGNeT's for the rest; max_length is the frames of one window (what
    MAGNeT makes, and what keeps the text-to-audio pipeline from adding its default max_new_tokens)."""
    values = dataclasses.asdict(params)
    if not params.use_sampling:  # transformers refuses to save sampling fields beside do_sample=False: greedy decoding
        for key in ("temperature", "top_k", "top_p"):  # takes them from config.decoder.generation (MAGNeT's
            del values[key]  # temperature still shapes the re-masking confidence), as generate() does
    return GenerationConfig(do_sample=values.pop("use_sampling"), max_length=frames, pad_token_id=pad_token_id,
                            **{k: list(v) if isinstance(v, tuple) else v for k, v in values.items()})


def _param_name(key: str) -> str:
    return "use_sampling" if key == "do_sample" else key


def _steps(steps: tp.Any) -> tp.Any:
    if isinstance(steps, (list, tuple)):
        return tuple(int(s) if isinstance(s, float) and s.is_integer() else s for s in steps)
    return steps


def _check_text(ids: tp.Any, mask: tp.Any, ids_name: str, mask_name: str) -> tp.Tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.is_floating_point():
        raise ValueError(f"{ids_name} must be an integer tensor [B, S] (MagnetProcessor(text=..., "
                         f"return_tensors='pt')); got {show(getattr(ids, 'shape', ids))}")
    if mask is None:
        raise ValueError(f"give {mask_name} with {ids_name}: MAGNeT masks the padding and the empty texts")
    if not isinstance(mask, torch.Tensor) or mask.shape != ids.shape:
        raise ValueError(f"{mask_name} must be shaped as {ids_name} {list(ids.shape)}; got "
                         f"{show(getattr(mask, 'shape', mask))}")
    return ids.long(), mask.long()


def _unpadded(values: tp.Any, padding_mask: tp.Any) -> torch.Tensor:
    """input_values [B, C, L] of prompts of one length (a padding mask must keep every sample)."""
    if not isinstance(values, torch.Tensor) or values.dim() not in (2, 3):
        raise ValueError(f"input_values must be audio [B, C, L] (MagnetProcessor(audio=..., sampling_rate=...)); "
                         f"got {show(getattr(values, 'shape', values))}")
    if padding_mask is not None and not bool(torch.as_tensor(padding_mask).bool().all()):
        raise ValueError("the audio prompts have different lengths (padding_mask): MAGNeT continues prompts of one "
                         "length; trim them to the shortest")
    return values.float()


__all__ = ["MagnetForConditionalGeneration", "MagnetGenerateOutput", "generation_config_for", "settings_of"]
