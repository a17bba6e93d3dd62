"""The one strict loader (openmagnet/checkpoint/strict.py): one error names every missing, unexpected, mis-shaped or
mistyped tensor; `rename` maps a file's names onto the module's; a meta-device module gets the tensors assigned in
the dtype asked for, a built one gets them copied in its own dtypes."""
import pytest
import torch
from torch import nn

from openmagnet.checkpoint import CheckpointError, check_state_dict, load_strict, name_list


def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


def test_every_bad_tensor_is_named_in_one_error():
    state = _model().state_dict()
    state["0.weight"], state["2.bias"] = torch.zeros(5, 3), torch.zeros(7)  # two of another shape
    state["0.bias"] = torch.zeros(4, dtype=torch.int64)  # an integer tensor where a float one belongs
    del state["2.weight"]
    state["3.weight"], state["4.weight"] = torch.zeros(1), torch.zeros(1)
    with pytest.raises(CheckpointError) as info:
        check_state_dict(_model(), state, "toy.bin", hint="; is it the right file?")
    assert str(info.value) == ("toy.bin does not match the model: missing: 2.weight; unexpected: 3.weight, 4.weight; "
                               "0.bias is torch.int64, expected torch.float32; 0.weight has shape [5, 3], expected "
                               "[4, 3]; 2.bias has shape [7], expected [2]; is it the right file?")
    assert isinstance(info.value, ValueError)  # the faces catch ValueError


def test_a_value_that_is_no_tensor_is_named():
    state = {**_model().state_dict(), "0.bias": [0.0] * 4}
    with pytest.raises(CheckpointError, match=r"^m does not match the model: 0\.bias is a list, not a tensor$"):
        check_state_dict(_model(), state, "m")


def test_rename_maps_the_file_names_and_a_built_module_keeps_its_dtypes():
    source = _model()
    file_state = {"net." + k: v.to(torch.float16) for k, v in source.state_dict().items()}
    model = _model()
    params = [id(p) for p in model.parameters()]
    load_strict(model, file_state, "f.pt", rename=lambda s: {k.removeprefix("net."): v for k, v in s.items()})
    for key, value in model.state_dict().items():
        assert value.dtype == torch.float32 and torch.equal(value, file_state["net." + key].float()), key
    assert [id(p) for p in model.parameters()] == params  # copied into the module's own parameters
    with pytest.raises(CheckpointError, match=r"^f\.pt does not match the model: missing: 0\.bias, 0\.weight, "
                                              r"2\.bias, 2\.weight; unexpected: net\.0\.bias, net\.0\.weight, "
                                              r"net\.2\.bias, net\.2\.weight$"):
        load_strict(_model(), file_state, "f.pt")


def test_a_meta_module_gets_the_tensors_assigned_in_the_dtype_asked_for():
    state = _model().state_dict()
    with torch.device("meta"):
        model = _model()
    load_strict(model, state, "m", device=torch.device("cpu"),
                dtype=lambda key: torch.bfloat16 if key.endswith("weight") else torch.float32)
    assert not any(p.is_meta for p in model.parameters())
    assert model[0].weight.dtype == torch.bfloat16 and model[0].bias.dtype == torch.float32
    assert torch.equal(model[2].bias, state["2.bias"])
    broken = {**state, "2.bias": torch.tensor([0.0, float("nan")])}
    with torch.device("meta"):
        model = _model()
    with pytest.raises(CheckpointError, match=r"^m: 2\.bias hold NaN or inf values: the file is corrupt"):
        load_strict(model, broken, "m", device=torch.device("cpu"), dtype=torch.float32)


def test_name_list_shows_the_first_names_and_counts_the_rest():
    assert name_list(["c", "a", "b"]) == "a, b, c"
    assert name_list([f"k{i}" for i in range(8)], limit=3) == "k0, k1, k2 and 5 more"
    long = name_list(["x" * 201, "b"])  # a name read from a file is cut short
    assert long.startswith("'xxx") and long.endswith(", b") and len(long) < 120
