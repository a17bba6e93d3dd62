"""One concrete case per crash the fuzzing found (tests/fuzz/test_*_fuzz.py), each fixed; bench/results/fuzz.md
lists them. Before its fix, every case here raised something other than the one-line error it now gets (or hung,
or ran out of memory)."""
import gzip
import math
import warnings

import pytest
import torch
import yaml

from openmagnet.checkpoint import CheckpointError, codec_from_package, lm_from_package, load_package, parse_xp_cfg
from openmagnet.config import GenerationParams, generation_from_xp
from openmagnet.data.info import read_info_json
from openmagnet.data.manifest import read_manifest
from tests.fuzz import ckpt
from tests.fuzz.conftest import check_one_line, guard

CPU = torch.device("cpu")


def edited(path, edit):
    """The fixture package at `path` with `edit(cfg)` applied to its parsed xp.cfg."""
    pkg = dict(ckpt.package(path))
    cfg = yaml.safe_load(pkg["xp.cfg"])
    edit(cfg)
    pkg["xp.cfg"] = yaml.safe_dump(cfg)
    return pkg


def codec_error(edit) -> str:
    with guard("regressions"), pytest.raises(CheckpointError) as err:
        codec_from_package(edited(ckpt.CODEC, edit), "SOURCE", CPU)
    return check_one_line(err.value, "SOURCE")


def lm_error(pkg) -> str:
    with guard("regressions"), pytest.raises(CheckpointError) as err:
        lm_from_package(pkg, "SOURCE", CPU, torch.float32)
    return check_one_line(err.value, "SOURCE")


# ---------------------------------------------------------------------------------------------- xp.cfg
def test_codec_xp_section_that_is_not_a_mapping():
    """Was AttributeError: 'int' object has no attribute 'get' (seanet: 5)."""
    assert "seanet must be a mapping, got int" in codec_error(lambda c: c.__setitem__("seanet", 5))
    assert "rvq must be a mapping, got list" in codec_error(lambda c: c.__setitem__("rvq", [1]))
    assert "seanet.decoder must be a mapping" in codec_error(lambda c: c["seanet"].__setitem__("decoder", 1))


def test_codec_xp_field_of_the_wrong_type():
    """Was TypeError: int() argument must be ... not 'dict' (seanet.dimension: {}), and 'NoneType' object is not
    iterable (seanet.ratios: null)."""
    assert "seanet.dimension = {} is not a number" in codec_error(lambda c: c["seanet"].__setitem__("dimension", {}))
    assert "seanet.ratios = None must be a list" in codec_error(lambda c: c["seanet"].__setitem__("ratios", None))
    assert "seanet.true_skip = 'yes' must be true or false" in codec_error(
        lambda c: c["seanet"].__setitem__("true_skip", "yes"))


def test_infinity_in_a_whole_number_field():
    """Was OverflowError: cannot convert float infinity to integer (seanet.kernel_size: .inf, transformer_lm.n_q)."""
    assert "seanet.kernel_size = inf is not a whole number" in codec_error(
        lambda c: c["seanet"].__setitem__("kernel_size", math.inf))
    pkg = edited(ckpt.LM, lambda c: c["transformer_lm"].__setitem__("n_q", math.inf))
    assert "transformer_lm.n_q = inf is not a whole number" in lm_error(pkg)


def test_huge_sizes_do_not_build_huge_models():
    """Was a hang: rvq.n_q: 10**30 built quantizers until memory ran out; num_layers likewise."""
    assert "rvq.n_q = 1000000000000000000000000000000 is outside [1, 64]" in codec_error(
        lambda c: c["rvq"].__setitem__("n_q", 10 ** 30))
    pkg = edited(ckpt.LM, lambda c: c["transformer_lm"].__setitem__("num_layers", 10 ** 9))
    assert "transformer_lm.num_layers = 1000000000 is outside [1, 1024]" in lm_error(pkg)


def test_lm_xp_missing_dim_and_zero_heads():
    """Was KeyError: 'dim', and ZeroDivisionError for num_heads: 0."""
    assert "has no transformer_lm.dim" in lm_error(edited(ckpt.LM, lambda c: c["transformer_lm"].pop("dim")))
    assert "transformer_lm.num_heads = 0 is outside" in lm_error(
        edited(ckpt.LM, lambda c: c["transformer_lm"].__setitem__("num_heads", 0)))


def test_codec_constructor_errors_name_the_file():
    """Was a ValueError without the file: "pad_mode must be one of ('constant', 'reflect'); got '1.5'"."""
    assert codec_error(lambda c: c["seanet"].__setitem__("pad_mode", "1.5")).startswith("SOURCE: pad_mode must be")


def test_yaml_alias_bomb_is_refused_quickly():
    """Was a hang: lm_model: *bomb (a billion laughs) made the error message print 10**9 strings."""
    text = ckpt.package(ckpt.LM)["xp.cfg"].replace("lm_model: transformer_lm_magnet", "lm_model: *l8")
    pkg = dict(ckpt.package(ckpt.LM), **{"xp.cfg": "l0: &l0 [lol, lol, lol]\n" + "".join(
        f"l{k}: &l{k} [{', '.join([f'*l{k - 1}'] * 9)}]\n" for k in range(1, 9)) + text})
    assert "more than 64 aliases" in lm_error(pkg)


def test_small_alias_bombs_are_printed_short():
    """A bomb under the alias limit: its error message stays short (reprlib) instead of expanding every alias."""
    pkg = edited(ckpt.LM, lambda c: c.__setitem__("lm_model", "X"))
    pkg["xp.cfg"] = "a: &a [x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\n" + \
        pkg["xp.cfg"].replace("lm_model: X", "lm_model: [*b, *b, *b, *b, *b, *b, *b, *b]")
    assert len(lm_error(pkg)) < 300


@pytest.mark.parametrize("text, says", [("a: " + "[" * 5000 + "]" * 5000, "RecursionError"),
                                        ("a: 2001-13-45", "month must be in 1..12"),
                                        ("a: " + "9" * 5000, "Exceeds the limit")])
def test_yaml_the_parser_itself_cannot_build(text, says):
    """Was RecursionError (deep nesting), and ValueErrors that named no file (a bad date, an int too long)."""
    with pytest.raises(CheckpointError) as err:
        parse_xp_cfg(text, "SOURCE")
    assert says in check_one_line(err.value, "SOURCE")


@pytest.mark.parametrize("section, says", [({"top_k": "x"}, "top_k must be an integer"),
                                           ({1: 2, "a": 3}, "unknown keys ['1', 'a']"),
                                           ({"top_p": [1]}, "top_p must be a finite number")])
def test_stored_generation_settings_of_the_wrong_type(section, says):
    """Was TypeError ('<' not supported between 'str' and 'int'; sorting int and str keys) out of get_pretrained."""
    with pytest.raises(ValueError) as err:
        generation_from_xp({"openmagnet": {"generation": section}})
    assert says in check_one_line(err.value)
    if 1 not in section:
        with pytest.raises(ValueError):
            GenerationParams(**section)


# ---------------------------------------------------------------------------------------------- tensors
def with_state(path, edit):
    pkg = dict(ckpt.package(path))
    pkg["best_state"] = dict(pkg["best_state"])
    edit(pkg["best_state"])
    return pkg


def test_state_dict_key_that_is_not_a_string():
    """Was TypeError: sequence item 0: expected str instance, tuple found (joining the unexpected keys)."""
    pkg = with_state(ckpt.LM, lambda s: s.__setitem__(("a", 1), s.pop("out_norm.bias")))
    assert "unexpected: ('a', 1)" in lm_error(pkg)


@pytest.mark.parametrize("make, says", [(lambda v: v.to(torch.int16), "is torch.int16, expected torch.float32"),
                                        (lambda v: v.to(torch.complex64), "is torch.complex64"),
                                        (lambda v: torch.empty(v.shape, device="meta"), "holds no data"),
                                        (lambda v: torch.full_like(v, math.nan), "hold NaN or inf values")])
def test_tensor_of_the_wrong_kind(make, says):
    """Was RuntimeError 'Only Tensors of floating point and complex dtype can require gradients' (ints),
    NotImplementedError 'Cannot copy out of meta tensor' (meta); complex and NaN weights loaded, and the NaN ones
    made generation fail in torch.multinomial."""
    pkg = with_state(ckpt.LM, lambda s: s.__setitem__("out_norm.weight", make(s["out_norm.weight"])))
    assert says in lm_error(pkg)
    pkg = with_state(ckpt.CODEC, lambda s: s.__setitem__("decoder.model.0.conv.conv.bias",
                                                         make(s["decoder.model.0.conv.conv.bias"])))
    with pytest.raises(CheckpointError) as err:
        codec_from_package(pkg, "SOURCE", CPU)
    assert says in check_one_line(err.value, "SOURCE")


@pytest.mark.parametrize("value, says", [("x", "is not a [dim, text_dim] matrix"),
                                         (torch.zeros(3), "is not a [dim, text_dim] matrix")])
def test_text_projection_that_is_not_a_matrix(value, says):
    """Was AttributeError ('str' object has no attribute 'shape') and IndexError (a 1-D tensor)."""
    key = "condition_provider.conditioners.description.output_proj.weight"
    assert says in lm_error(with_state(ckpt.LM, lambda s: s.__setitem__(key, value)))


def test_codec_best_state_that_is_not_a_dict():
    """Was TypeError: 'int' object is not iterable (building the key sets)."""
    pkg = dict(ckpt.package(ckpt.CODEC), best_state=3)
    with pytest.raises(CheckpointError) as err:
        codec_from_package(pkg, "SOURCE", CPU)
    assert "'best_state' is a int" in check_one_line(err.value, "SOURCE")


@pytest.mark.parametrize("pointer", [5, None, "../../etc", "/etc", "a/b/c", "a\nb"])
def test_codec_pointer_that_is_not_a_hub_id(pointer):
    """Was a multi-line OSError from transformers (and a local folder named by a downloaded file was read)."""
    with pytest.raises(CheckpointError) as err:
        codec_from_package({"pretrained": pointer}, "SOURCE", CPU)
    assert "is not a Hugging Face hub id" in check_one_line(err.value, "SOURCE")


def test_codec_pointer_to_a_missing_hub_model():
    """Was a multi-line OSError ("We couldn't connect to 'https://huggingface.co' ...\\nCheck your connection")."""
    with pytest.raises(CheckpointError) as err:
        codec_from_package({"pretrained": "facebook/encodec_24khz"}, "SOURCE", CPU)
    assert "cannot load the Hugging Face EnCodec 'facebook/encodec_24khz'" in check_one_line(err.value, "SOURCE")


# ---------------------------------------------------------------------------------------------- files
def test_compressed_member_is_refused_before_unpickling(tmp_path):
    """Was accepted: a deflated data.pkl inflates inside torch.load, so a few MB could make GBs (a zip bomb)."""
    items = ckpt.members(ckpt.LM)
    path = tmp_path / "state_dict.bin"
    path.write_bytes(ckpt.zip_of(items, compress={"state_dict/data.pkl"}))
    with pytest.raises(CheckpointError) as err:
        load_package(path)
    assert "its member 'state_dict/data.pkl' is compressed" in check_one_line(err.value, str(path))


def test_refusal_names_the_global_and_never_advises_weights_only_false(tmp_path):
    """Was "... Re-running torch.load with weights_only set to False will likely succeed ..." in our message."""
    marker = tmp_path / "MARKER"
    path = tmp_path / "state_dict.bin"
    path.write_bytes(ckpt.torch_zip(ckpt.wrap(ckpt.call("posix", "system", (f"touch {marker}",), "reduce"), "top")))
    with pytest.raises(CheckpointError) as err:
        load_package(path)
    message = check_one_line(err.value, str(path))
    assert "refused: its pickle asks for Trying to load unsupported GLOBAL posix.system" in message
    assert "weights-only loader does not allow" in message and "False" not in message
    assert not marker.exists()


def test_xp_cfg_too_long_is_refused():
    with pytest.raises(CheckpointError) as err:
        parse_xp_cfg("a: b\n" * 300_000, "SOURCE")
    assert "far more than an experiment config" in check_one_line(err.value, "SOURCE")



# ---------------------------------------------------------------------------------------------- generation inputs
def test_prompt_with_a_lone_surrogate(model):
    """Was TypeError: TextEncodeInput must be Union[TextInputSequence, ...] from the tokenizer ('\\ud800')."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the tiny model's sampling collapses
        audio = model.generate(["rock \ud800 and roll", "\udfff"])
    assert audio.shape[0] == 2 and bool(torch.isfinite(audio).all())


def test_prompt_over_the_encoders_limit_is_cut_with_a_warning(model):
    """Was encoded whole: a 10,000-character prompt took 27 s on the 2-layer test T5 (attention is quadratic in the
    length; the real T5 was trained on 512 tokens)."""
    inputs = model.conditioner.tokenize(["rock " * 2000, "jazz"])
    with pytest.warns(UserWarning, match="description 0 is longer than the text encoder's 512 tokens: only the "
                                         "first 512 are used"):
        inputs = model.conditioner.tokenize(["rock " * 2000, "jazz"])
    assert inputs["input_ids"].shape[1] == 512 and inputs["attention_mask"][1].sum() < 10
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # nothing to say about a short prompt
        assert model.conditioner.tokenize(["rock " * 100])["input_ids"].shape[1] < 512


@pytest.mark.parametrize("call", ["continuation", "infill"])
def test_empty_audio(model, call):
    """Was RuntimeError: cannot reshape tensor of 0 elements (julius) / kernel size can't be greater than actual
    input size (the codec), for a prompt of 0 samples, or one that resampling leaves at 0 samples."""
    for wav, rate in [(torch.zeros(1, 0), 32000), (torch.zeros(1, 0), 1), (torch.zeros(1, 1), 10 ** 9)]:
        with pytest.raises(ValueError) as err:
            if call == "continuation":
                model.generate_continuation(wav, rate)
            else:
                model.generate_infill(wav, rate, [(0.0, 1e-9)])
        assert "empty" in check_one_line(err.value) or "shorter than one sample" in str(err.value) \
            or "window" in str(err.value)


@pytest.mark.parametrize("rate", [math.nan, math.inf, 0.5])
def test_sample_rate_that_is_not_a_rate(model, rate):
    """Was OverflowError: cannot convert float infinity to integer (inf), and a ValueError naming nothing (NaN)."""
    with pytest.raises(ValueError) as err:
        model.generate_continuation(torch.zeros(1, 100), rate)
    assert check_one_line(err.value).startswith("prompt_sample_rate must be a number of Hz, at least 1")


def test_sample_rate_with_no_small_ratio_to_the_models(model):
    """Was minutes and then out of memory: 44101 Hz -> 32000 Hz is the fraction 44101/32000, for which julius builds
    32000 filters of 118,000 taps (15 GB). Now the audio is taken as 44100 Hz (0.002% off), with a warning."""
    from openmagnet.audio import convert_audio, resampling_rates

    with pytest.warns(UserWarning, match="resampling 44101 Hz audio as if it were 44100 Hz"):
        assert resampling_rates(44101, 32000) == (44100, 32000)
    assert resampling_rates(44100, 32000) == (44100, 32000)  # usual rates are untouched (audiocraft's numbers)
    with guard("regressions"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert convert_audio(torch.randn(1, 44101), 44101, 32000, 1).shape == (1, 32000)
        audio = model.generate_continuation(torch.randn(1, 2000) * 0.1, 44101)
    assert bool(torch.isfinite(audio).all())
    with pytest.raises(ValueError) as err:
        resampling_rates(10 ** 12, 32000)
    assert "resample it to a usual rate" in check_one_line(err.value)


# ---------------------------------------------------------------------------------------------- data files
def test_wav_header_with_a_huge_rate_is_not_padded_to_gigabytes(tmp_path):
    """Was RuntimeError: DefaultCPUAllocator: can't allocate memory (25,769,803,764 bytes), or 10 s of zero-filling:
    a 44-byte WAV whose header says 3 channels at 2**31 - 1 Hz, read with pad=True for 1 s (found by the long run)."""
    from openmagnet.audio import audio_read

    path = tmp_path / "lie.wav"
    path.write_bytes(b"RIFF$\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x03\x00\xff\xff\xff\x7f\x00\x00\x00\x00"
                     b"\x00\x00\x01\x00data\x00\x00\x00\x00")
    with guard("regressions", seconds=30), pytest.raises(ValueError) as err:
        audio_read(path, duration=1.0, pad=True)
    assert "its header says 2147483647 Hz x 3 channels" in check_one_line(err.value, str(path))
    assert audio_read(path, duration=1.0)[0].shape == (3, 0)  # without padding it reads what is there: nothing


def test_manifest_gz_with_a_corrupt_stream(tmp_path):
    """Was zlib.error: Error -3 while decompressing data (not an OSError)."""
    packed = gzip.compress(b'{"path": "a.wav", "duration": 1, "sample_rate": 8000}\n' * 50)
    (tmp_path / "data.jsonl.gz").write_bytes(packed[:10] + bytes(b ^ 0x5A for b in packed[10:]))
    with pytest.raises(ValueError) as err:
        read_manifest(tmp_path)
    assert "cannot read manifest" in check_one_line(err.value, str(tmp_path / "data.jsonl.gz"))


@pytest.mark.parametrize("line, says", [("[" * 100_000 + "]" * 100_000, "nested too deeply"),
                                        ('{"path": "a.wav", "duration": ' + "9" * 400 + ', "sample_rate": 8000}',
                                         "'duration' must be a finite non-negative number"),
                                        ('{"path": "a.wav", "duration": 1e400, "sample_rate": 8000}',
                                         "'duration' must be a finite non-negative number, got inf"),
                                        ('{"path": "a.wav", "duration": NaN, "sample_rate": 8000}',
                                         "'duration' must be a finite non-negative number, got nan"),
                                        ('{"path": "a.wav", "duration": 1, "sample_rate": Infinity}',
                                         "'sample_rate' must be a finite non-negative number")])
def test_manifest_line_with_numbers_json_allows(tmp_path, line, says):
    """Was RecursionError (deep nesting), OverflowError (an int past float's range), and, for 1e400 / NaN,
    a manifest entry of infinite or NaN duration that later failed in the dataset's seek."""
    (tmp_path / "data.jsonl").write_text(line + "\n")
    with pytest.raises(ValueError) as err:
        read_manifest(tmp_path)
    assert says in check_one_line(err.value, str(tmp_path / "data.jsonl"))


@pytest.mark.parametrize("text, says", [('{"description": ' + "[" * 100_000 + "]" * 100_000 + "}", "maximum recursion"),
                                        ('{"bpm": ' + "9" * 5000 + "}", "Exceeds the limit")])
def test_side_car_json_python_cannot_parse(tmp_path, text, says):
    """Was RecursionError (deep nesting) and a ValueError naming no file (an int of 5000 digits)."""
    path = tmp_path / "song.json"
    path.write_text(text)
    with pytest.raises(ValueError) as err:
        read_info_json(path)
    assert says in check_one_line(err.value, str(path))


def test_side_car_bpm_past_floats_range(tmp_path):
    """Was OverflowError: int too large to convert to float (a 400-digit bpm)."""
    from openmagnet.data.info import load_music_info

    path = tmp_path / "song.json"
    path.write_text('{"description": "x", "bpm": ' + "9" * 400 + "}")
    assert load_music_info(path).bpm is None
