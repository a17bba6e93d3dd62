"""One concrete case per crash the fuzzing found (tests/fuzz/test_*_fuzz.py), each fixed; bench/results/fuzz.md
lists them. Before its fix, every case here raised something other than the one-line error it now gets (or hung,
or ran out of memory)."""
import copy
import math

import pytest
import torch
import yaml

from openmagnet.checkpoint import CheckpointError, codec_from_package, lm_from_package, load_package, parse_xp_cfg
from openmagnet.config import GenerationParams, generation_from_xp
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

