"""MagnetConfig: its sections, their consistency checks (one-line errors), and a tiny random model built from a config
alone (hidden 16, 2 layers), which generates, saves and loads like a converted one."""
import dataclasses
import warnings

import pytest
import torch

import openmagnet.transformers as face
from openmagnet.config import CodecConfig, LMConfig
from openmagnet.transformers.configuration import codec_fields

TINY_T5 = {"model_type": "t5", "d_model": 16, "d_kv": 8, "d_ff": 32, "num_layers": 1, "num_heads": 2,
           "vocab_size": 64}
TINY_LM = {**dataclasses.asdict(LMConfig(dim=16, num_heads=2, num_layers=2, card=32, text_dim=16,
                                         segment_duration=1.0)), "generation": {"decoding_steps": [2, 1, 1, 1]}}
TINY_CODEC = codec_fields(CodecConfig(n_filters=2, dimension=8, lstm=0, bins=32))


def tiny_config(**changes) -> face.MagnetConfig:
    return face.MagnetConfig(**{"text_encoder": TINY_T5, "audio_encoder": TINY_CODEC, "decoder": TINY_LM, **changes})


def test_defaults_describe_magnet_small():
    config = face.MagnetConfig()
    config.check()
    assert config.lm_config == LMConfig() and config.codec_config == CodecConfig()
    assert (config.sampling_rate, config.audio_channels, config.frame_rate) == (32000, 1, 50.0)
    assert config.text_encoder_config.d_model == 768 and config.text_encoder_name == "t5-base"
    assert config.decoder["stage_attention_windows"] == [None, 5, 5, 5]


@pytest.mark.parametrize("changes, message", [
    (dict(text_encoder={**TINY_T5, "d_model": 24}), "config: the text encoder is 24 wide but decoder.text_dim is 16"),
    (dict(decoder={**TINY_LM, "layers": 3}), "decoder has unknown fields ['layers']"),
    (dict(decoder={**TINY_LM, "generation": {"temperature": -1}}), "temperature must be >= 0; got -1"),
    (dict(audio_encoder={**TINY_CODEC, "ratios": [8, 5, 4]}),
     "config: the audio_encoder makes 200 frames a second but the decoder expects 50"),
    (dict(audio_encoder={"model_type": "dac"}), "audio_encoder.model_type must be 'encodec'"),
    (dict(text_encoder_kind="clip"), "text_encoder_kind must be one of t5, hf; got 'clip'"),
], ids=["text-width", "decoder-field", "generation", "frame-rate", "codec-kind", "text-kind"])
def test_inconsistent_configs_are_one_line_errors(changes, message):
    with pytest.raises(ValueError) as err:
        face.MagnetForConditionalGeneration(tiny_config(**changes))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_model_from_a_config_generates_saves_and_loads(tmp_path):
    torch.manual_seed(0)
    model = face.MagnetForConditionalGeneration(tiny_config()).eval()  # as from_pretrained leaves it (no dropout)
    assert model.generation_config.decoding_steps == [2, 1, 1, 1] and model.generation_config.max_length == 50
    ids = torch.tensor([[5, 9, 1], [3, 1, 0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])

    def generate(m):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "the sampling collapsed")  # random weights
            return m.generate(input_ids=ids, attention_mask=mask, generator=torch.Generator().manual_seed(1),
                              return_dict_in_generate=True)

    out = generate(model)
    hop = CodecConfig().hop_length
    assert out.sequences.shape == (2, 4, 48) and out.audio.shape == (2, 1, 48 * hop)  # 50 frames, whole spans
    assert int(out.sequences.max()) < 32
    model.save_pretrained(tmp_path / "tiny")
    again = generate(face.MagnetForConditionalGeneration.from_pretrained(tmp_path / "tiny"))
    assert torch.equal(again.sequences, out.sequences) and torch.equal(again.audio, out.audio)
    back = face.MagnetForConditionalGeneration.from_pretrained(tmp_path / "tiny")
    with pytest.raises(ValueError, match="this model keeps no audiocraft xp.cfg"):
        back.to_magnet().save_pretrained(tmp_path / "audiocraft", layout="audiocraft")


def test_greedy_stored_settings_save_and_apply(tmp_path):
    """A model that stores greedy decoding: transformers will not save temperature / top_p beside do_sample=False, so
    generation_config.json leaves them out and generate() takes them from config.decoder.generation (the temperature
    still shapes MAGNeT's re-masking scores when greedy)."""
    stored = {"use_sampling": False, "temperature": 2.0, "top_p": 0.5, "decoding_steps": [2, 1, 1, 1]}
    model = face.MagnetForConditionalGeneration(tiny_config(decoder={**TINY_LM, "generation": stored})).eval()
    model.save_pretrained(tmp_path / "greedy")
    back = face.MagnetForConditionalGeneration.from_pretrained(tmp_path / "greedy")
    assert back.generation_config.do_sample is False and back.generation_config.temperature is None
    params = back._settings({})
    assert (params.use_sampling, params.temperature, params.top_p, params.decoding_steps) == (False, 2.0, 0.5,
                                                                                             (2, 1, 1, 1))
    assert back._settings({"do_sample": True, "temperature": 1.0}).temperature == 1.0
