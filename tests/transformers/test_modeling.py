"""MagnetForConditionalGeneration and the text-to-audio pipeline against openmagnet's MAGNeT and audiocraft 1.3.0's
golden tokens, on models converted from the released-layout fixtures and from the bundled demo model."""
import warnings

import numpy as np
import pytest
import torch

import openmagnet.transformers as face
from openmagnet import CheckpointError
from openmagnet.lm import MagnetLM
from tests.conftest import assert_same_tokens, meta, reference
from tests.transformers.conftest import settings, source_model

from transformers import AutoConfig, AutoModelForTextToWaveform, AutoProcessor, GenerationConfig, pipeline

FAST = dict(duration=1.0, decoding_steps=[3, 2, 2, 2])  # one second, 9 steps: what the comparisons below run


@pytest.fixture(scope="module")
def loaded(converted):
    """loaded(name) -> (MagnetForConditionalGeneration, MagnetProcessor) read back through the Auto classes."""
    cache = {}

    def load(name):
        if name not in cache:
            folder = converted(name)
            cache[name] = AutoModelForTextToWaveform.from_pretrained(folder), AutoProcessor.from_pretrained(folder)
        return cache[name]

    return load


# ------------------------------------------------------------------------------------------------ audiocraft's tokens
@pytest.mark.parametrize("name", ["music10", "sound10"])
def test_greedy_tokens_identical_to_audiocraft(loaded, name):
    """do_sample=False is MAGNeT's greedy decoding: the tokens audiocraft 1.3.0 made on the same files (10 s,
    decoding steps 20/10/10/10)."""
    model, processor = loaded(name)
    inputs = processor(text=meta(name)["gen_descriptions"])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "the sampling collapsed")
        out = model.generate(**inputs, do_sample=False, decoding_steps=meta(name)["gen_decoding_steps"],
                             return_dict_in_generate=True)
    expected = reference(name)["gen_nonoverlap"].long()
    assert_same_tokens(out.sequences, expected, f"{name} transformers face greedy")
    hop = model.config.sampling_rate // int(model.config.frame_rate)
    assert out.audio.shape == (2, 1, expected.shape[-1] * hop) and out.audio.dtype == torch.float32


# ----------------------------------------------------------------------------------------------- every door, one answer
@pytest.mark.parametrize("sampled", [False, True], ids=["greedy", "sampled"])
@pytest.mark.parametrize("name", ["music10", "music10_hf", "sound10", "demo"])
def test_pipeline_and_generate_equal_magnet(loaded, converted, name, sampled):
    """pipeline("text-to-audio", DIR), MagnetForConditionalGeneration.generate and
    MAGNeT.get_pretrained(SOURCE).generate with the same seed and settings: the same tokens and the same audio."""
    source = source_model(name)
    prompt = "dog barking in the rain" if name == "sound10" else "happy rock"
    with settings(source, duration=FAST["duration"], use_sampling=sampled, decoding_steps=FAST["decoding_steps"]):
        torch.manual_seed(7)
        wav, tokens = source.generate([prompt], return_tokens=True)
    model, processor = loaded(name)
    synth = pipeline("text-to-audio", str(converted(name)))
    assert synth.sampling_rate == source.sample_rate and isinstance(synth.processor, face.MagnetProcessor)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "the sampling collapsed")
        torch.manual_seed(7)
        heard = synth(prompt, forward_params={"do_sample": sampled, **FAST})
        torch.manual_seed(7)
        out = model.generate(**processor(text=[prompt]), do_sample=sampled, return_dict_in_generate=True, **FAST)
    assert torch.equal(out.sequences, tokens)
    assert torch.equal(out.audio, wav)
    assert heard["sampling_rate"] == source.sample_rate
    assert heard["audio"].shape == (wav.shape[-1],)
    np.testing.assert_allclose(heard["audio"], wav[0, 0].numpy(), rtol=0, atol=1e-6)


def test_generator_negative_prompts_and_continuation_equal_magnet(loaded):
    source = source_model("music10")
    model, processor = loaded("music10")
    prompts, negatives = ["happy rock", "energetic EDM with a big drop at 128 bpm"], ["sad piano", None]
    audio = torch.randn(2, 1, 16000, generator=torch.Generator().manual_seed(0)) * 0.1
    with settings(source, duration=1.0, decoding_steps=FAST["decoding_steps"]):
        wav, tokens = source.generate(prompts, return_tokens=True, negative_descriptions=negatives,
                                      generator=torch.Generator().manual_seed(3))
        cont, cont_tokens = source.generate_continuation(audio, 32000, prompts, return_tokens=True,
                                                         generator=torch.Generator().manual_seed(4))
    inputs = processor(text=prompts, negative_text=negatives)
    assert inputs["negative_input_ids"].shape == inputs["input_ids"].shape
    assert int(inputs["negative_attention_mask"][1].sum()) == 0  # None: the null condition
    out = model.generate(**inputs, generator=torch.Generator().manual_seed(3), return_dict_in_generate=True, **FAST)
    assert torch.equal(out.sequences, tokens) and torch.equal(out.audio, wav)
    inputs = processor(text=prompts, audio=[a[0].numpy() for a in audio], sampling_rate=32000)
    out = model.generate(**inputs, generator=torch.Generator().manual_seed(4), return_dict_in_generate=True, **FAST)
    assert torch.equal(out.sequences, cont_tokens) and torch.equal(out.audio, cont)


def test_processor_tokenizes_as_the_conditioner(loaded):
    """The saved tokenizer (reloaded through AutoProcessor) gives openmagnet's conditioner's ids and masks, empty
    texts fully masked (the null condition)."""
    source = source_model("music10")
    _, processor = loaded("music10")
    texts = ["happy rock", "", "energetic EDM with a big drop at 128 bpm", None]
    mine = processor(text=texts)
    theirs = source.conditioner.tokenize(texts)
    assert torch.equal(mine["input_ids"], theirs["input_ids"].cpu())
    assert torch.equal(mine["attention_mask"], theirs["attention_mask"].cpu())
    assert mine["attention_mask"][1].sum() == 0 and mine["attention_mask"][3].sum() == 0


# ------------------------------------------------------------------------------------------------ loading and saving
def test_auto_classes_load_the_folder_offline(converted):
    folder = converted("music10")
    config = AutoConfig.from_pretrained(folder)
    assert isinstance(config, face.MagnetConfig) and config.model_type == "magnet"
    assert config.sampling_rate == 32000 and config.text_encoder_name == "t5-base"
    assert config.decoder["stage_attention_windows"] == [None, 5, 5, 5]
    model = AutoModelForTextToWaveform.from_pretrained(folder)
    assert isinstance(model, face.MagnetForConditionalGeneration) and isinstance(model.decoder, MagnetLM)
    assert isinstance(AutoProcessor.from_pretrained(folder), face.MagnetProcessor)
    assert model.generation_config.max_length == 500 and model.generation_config.do_sample is True


def test_save_pretrained_round_trip_is_bit_identical(loaded, tmp_path):
    model, processor = loaded("music10_hf")
    model.save_pretrained(tmp_path / "again")
    processor.save_pretrained(tmp_path / "again")
    back = face.MagnetForConditionalGeneration.from_pretrained(tmp_path / "again")
    mine, theirs = model.state_dict(), back.state_dict()
    assert sorted(mine) == sorted(theirs)
    for key, value in mine.items():
        assert theirs[key].dtype == value.dtype and torch.equal(theirs[key], value), key
    assert back.config.to_diff_dict() == model.config.to_diff_dict()
    assert back.generation_config.to_diff_dict() == model.generation_config.to_diff_dict()
    assert processor.max_text_tokens == AutoProcessor.from_pretrained(tmp_path / "again").max_text_tokens


def test_reduced_dtype_keeps_what_openmagnet_keeps_in_float32(converted):
    """dtype=torch.bfloat16: only the transformer's matrices take it (MagnetLM.weight_dtype), the text encoder, the
    codec, embeddings, norms and heads stay float32; device_map='auto' places the model (here on the CPU)."""
    pytest.importorskip("accelerate")
    model = AutoModelForTextToWaveform.from_pretrained(converted("music10"), dtype=torch.bfloat16, device_map="auto")
    for key, value in model.state_dict().items():
        want = MagnetLM.weight_dtype(key[len("decoder."):], torch.bfloat16) if key.startswith("decoder.") \
            else torch.float32
        assert value.dtype == want, key
    assert model.decoder.dtype == torch.bfloat16


# ------------------------------------------------------------------------------------------------ bad input, one line
def one_line(error) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_unknown_generation_keyword_is_refused(loaded):
    model, processor = loaded("music10")
    inputs = processor(text=["happy rock"])
    with pytest.raises(TypeError) as err:
        model.generate(**inputs, num_beams=4)
    assert one_line(err).startswith("generate() got unknown keyword num_beams; MAGNeT takes do_sample, temperature")
    with pytest.raises(ValueError) as err:
        model.generate(**inputs, max_new_tokens=256)
    assert one_line(err) == ("max_new_tokens has no meaning for MAGNeT, which decodes whole windows of 10 s: give "
                             "duration=SECONDS instead")
    with pytest.raises(ValueError) as err:
        model.generate(**inputs, generation_config=GenerationConfig(num_beams=4))
    assert "generation_config sets num_beams, which MAGNeT does not use" in one_line(err)
    with pytest.raises(ValueError) as err:
        model.generate(**inputs, decoding_steps=[1, 2])
    assert one_line(err).startswith("decoding_steps must be 4 positive integers")
    with pytest.raises(ValueError) as err:
        model.generate(**inputs, do_sample="yes")
    assert one_line(err) == "do_sample must be true or false; got 'yes'"


def test_pipeline_refuses_max_new_tokens(converted):
    synth = pipeline("text-to-audio", str(converted("music10")))
    with pytest.raises(ValueError, match="max_new_tokens has no meaning for MAGNeT"):
        synth("happy rock", forward_params={"max_new_tokens": 35})


def test_folders_of_other_kinds_are_refused(converted, tmp_path):
    from tests.conftest import FIXTURES, HUB_CACHE

    t5 = next((HUB_CACHE / "models--t5-base" / "snapshots").iterdir())
    with pytest.raises(ValueError) as err:
        face.MagnetForConditionalGeneration.from_pretrained(t5)
    assert one_line(err).endswith("holds a 't5' model, not MAGNeT (model_type 'magnet'): give a folder written by "
                                  "`openmagnet convert --to transformers`")
    with pytest.raises(CheckpointError) as err:
        face.MagnetForConditionalGeneration.from_pretrained(FIXTURES / "music10")
    assert "has no config.json: it is a model in audiocraft's or openmagnet's layout" in one_line(err)
    source_model("music10").save_pretrained(tmp_path / "openmagnet")
    for loader in (face.MagnetForConditionalGeneration, AutoModelForTextToWaveform):
        with pytest.raises(ValueError) as err:
            loader.from_pretrained(tmp_path / "openmagnet")
        assert "is an openmagnet model folder (MAGNeT.save_pretrained), not a transformers one" in one_line(err)


def _edited(folder, tmp_path, edit):
    import shutil

    from safetensors.torch import load_file, save_file

    copy = tmp_path / "edited"
    shutil.copytree(folder, copy)
    state = load_file(copy / "model.safetensors")
    edit(state)
    save_file(state, copy / "model.safetensors", metadata={"format": "pt"})
    return copy


@pytest.mark.parametrize("edit, problem", [
    (lambda s: s.pop("decoder.linears.0.weight"), "missing: decoder.linears.0.weight"),
    (lambda s: s.update({"decoder.out_norm.weight": torch.zeros(7)}),
     "mis-shaped: decoder.out_norm.weight is [7], expected [32]"),
    (lambda s: s.update({"audio_encoder.extra": torch.zeros(2)}), "unexpected: audio_encoder.extra"),
], ids=["missing", "mis-shaped", "unexpected"])
def test_tensor_problems_are_one_line(converted, tmp_path, edit, problem):
    folder = _edited(converted("music10"), tmp_path, edit)
    for loader in (face.MagnetForConditionalGeneration, AutoModelForTextToWaveform):
        with pytest.raises(CheckpointError) as err:
            loader.from_pretrained(folder)
        assert one_line(err) == f"{folder} does not match the MAGNeT its config.json describes: {problem}"


def test_forward_says_to_generate(loaded):
    model, _ = loaded("music10")
    with pytest.raises(NotImplementedError, match="call generate()"):
        model(torch.zeros(1, 3, dtype=torch.long))


def test_openmagnet_says_how_to_read_a_transformers_folder(converted):
    from openmagnet import MAGNeT

    folder = converted("music10")
    with pytest.raises(CheckpointError) as err:
        MAGNeT.get_pretrained(folder, device="cpu")
    assert one_line(err) == (f"{folder} is a MAGNeT in the transformers layout (openmagnet convert --to transformers): "
                             f"load it with transformers after `import openmagnet.transformers`, or convert it back "
                             f"with `openmagnet convert --to openmagnet {folder} DST`")
