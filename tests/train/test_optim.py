"""Learning-rate schedules and the EMA (openmagnet/train/optim.py)."""
import pytest
import torch

from openmagnet.train.optim import EMA, lr_factor


# -------------------------------------------------------------------------------- optimisation
def test_schedules():
    assert lr_factor(0, "cosine", 10, 110) == 0.0
    assert lr_factor(5, "cosine", 10, 110) == 0.5
    assert lr_factor(10, "cosine", 10, 110) == 1.0
    assert lr_factor(60, "cosine", 10, 110) == pytest.approx(0.5)
    assert lr_factor(110, "cosine", 10, 110) == pytest.approx(0.0)
    assert lr_factor(110, "cosine", 10, 110, lr_min_ratio=0.1) == pytest.approx(0.1)
    assert lr_factor(40, "inverse_sqrt", 10, 0) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="unknown schedule 'linear': use one of cosine, inverse_sqrt, constant"):
        lr_factor(0, "linear", 0, 1)


def test_ema_is_unbiased():
    ema = EMA({"w": torch.zeros(2)}, decay=0.5)
    ema.update({"w": torch.ones(2)})   # the first update copies
    assert torch.equal(ema.state["w"], torch.ones(2))
    ema.update({"w": torch.full((2,), 4.0)})  # count 1.5: weight 2/3 on the new value
    assert torch.allclose(ema.state["w"], torch.full((2,), 3.0))


def test_ema_stays_on_the_weights_device_and_updates_in_place():
    w = torch.randn(3, 4).half()
    ema = EMA({"w": w, "steps": torch.tensor(3)}, decay=0.9)
    assert set(ema.state) == {"w"} and ema.state["w"].dtype == torch.float32
    average = ema.state["w"]
    ema.update({"w": w, "steps": torch.tensor(4)})
    assert ema.state["w"] is average and torch.equal(average, w.float())  # in place; the first update copies
    on_meta = EMA({"w": torch.empty(5, device="meta")}, decay=0.9)  # a non-CPU device: never copied to the host
    on_meta.update({"w": torch.empty(5, device="meta")})
    assert on_meta.state["w"].device.type == "meta"
