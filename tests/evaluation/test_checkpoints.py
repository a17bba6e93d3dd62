"""Strict loading of the metrics' weights (openmagnet/evaluation/checkpoints.py, over the checkpoint package's one
strict loader, tests/checkpoint/test_strict.py): every mis-shaped tensor is named in the one-line error, not only
the first; missing and unexpected keys are named too."""
import pytest
import torch
from torch import nn

from openmagnet.evaluation.checkpoints import load_strict


def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


def test_every_tensor_of_another_shape_is_named(tmp_path):
    path = tmp_path / "w.pt"
    state = _model().state_dict()
    state["0.weight"], state["2.bias"] = torch.zeros(5, 3), torch.zeros(7)
    torch.save(state, path)
    with pytest.raises(ValueError) as info:
        load_strict(_model(), path, what="Toy")
    assert str(info.value) == (f"Toy: {path} does not match the model: 0.weight has shape [5, 3], expected [4, 3]; "
                               f"2.bias has shape [7], expected [2]; is it the right file?")


def test_missing_and_unexpected_keys_are_named_and_a_good_file_loads(tmp_path):
    path = tmp_path / "w.pt"
    good = _model().state_dict()
    torch.save({**{k: v for k, v in good.items() if k != "2.bias"}, "3.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match=r"^Toy: .* does not match the model: missing: 2\.bias; "
                                         r"unexpected: 3\.weight; is it the right file\?$"):
        load_strict(_model(), path, what="Toy")
    torch.save(good, path)
    model = _model()
    load_strict(model, path, what="Toy")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in good.items())

