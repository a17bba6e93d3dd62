"""LoRA fine-tuning (openmagnet.train.lora): identity at init, trainable set, training, save/load, merge."""
import copy
import sys

import pytest
import torch

from openmagnet.config import LMConfig
from openmagnet.lm import MagnetLM

pytest.importorskip("peft")
from openmagnet.train import lora  # noqa: E402

RANK = 4
CFG = LMConfig(dim=32, num_heads=2, num_layers=2, text_dim=16, card=64, segment_duration=1.0)


def _base(cfg: LMConfig = CFG) -> MagnetLM:
    torch.manual_seed(0)
    return MagnetLM(cfg).eval()


def _inputs(dim: int = CFG.dim):
    gen = torch.Generator().manual_seed(1)
    codes = torch.randint(0, 64, [2, 4, 50], generator=gen)  # [B, K, T]
    cond = torch.randn(2, 5, dim, generator=gen)               # [B, S, D], already projected
    return codes, cond


def _outputs(model: MagnetLM) -> torch.Tensor:
    """All heads at stage 0 (full attention) and one head at stage 2 (windowed), concatenated."""
    codes, cond = _inputs()
    with torch.no_grad():
        return torch.cat([model(codes, cond, 0).flatten(), model.stage_logits(codes, cond, 2).flatten()])


def _train(model: MagnetLM, steps: int = 3) -> None:
    codes, cond = _inputs()
    target = torch.randint(0, 64, [2, 50], generator=torch.Generator().manual_seed(2))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-2)
    model.train()
    for stage in range(steps):
        loss = torch.nn.functional.cross_entropy(model.stage_logits(codes, cond, stage % 4).transpose(1, 2), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def _trained() -> MagnetLM:
    model = lora.apply_lora(_base(), rank=RANK, alpha=8)
    _train(model)
    return model


def test_init_is_identity_and_model_stays_in_place():
    lm = _base()
    ref = _outputs(lm)
    model = lora.apply_lora(lm, rank=RANK, alpha=8)
    assert model is lm and isinstance(model, MagnetLM) and model.cfg == CFG
    assert lora.is_lora(model)
    assert torch.equal(_outputs(model), ref)
    codes, cond = _inputs()
    assert model.hidden(codes, cond, 1).shape == (2, 50, CFG.dim)


def test_only_lora_params_train_and_count_matches_rank():
    model = lora.apply_lora(_base(), rank=RANK, alpha=8)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    d, h = CFG.dim, CFG.hidden_scale * CFG.dim
    # r * (in + out) per matrix: two packed [3D, D], two out_proj [D, D], linear1 [H, D], linear2 [D, H]
    per_layer = RANK * (2 * (d + 3 * d) + 2 * (d + d) + (d + h) + (h + d))
    assert sum(p.numel() for p in trainable.values()) == CFG.num_layers * per_layer
    assert any("self_attn.in_proj.lora_A" in n for n in trainable)
    assert any("cross_attention.in_proj.lora_B" in n for n in trainable)


def test_target_subset():
    model = lora.apply_lora(_base(), rank=RANK, alpha=8, targets=["linear1", "self_attn.out_proj"])
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert len(trainable) == 2 * CFG.num_layers * 2
    assert all("linear1" in n or "self_attn.out_proj" in n for n in trainable)


def test_training_changes_outputs_and_leaves_base_unchanged():
    lm = _base()
    ref = _outputs(lm)
    base_state = {k: v.clone() for k, v in lm.state_dict().items()}
    model = lora.apply_lora(lm, rank=RANK, alpha=8)
    _train(model)
    assert not torch.allclose(_outputs(model), ref)
    # every adapter got gradients through the kernels, including the packed q/k/v rows
    assert all(p.abs().sum() > 0 for n, p in model.named_parameters() if ".lora_B." in n)
    merged_state = lora.merge_lora(copy.deepcopy(model)).state_dict()
    assert merged_state.keys() == base_state.keys()
    lora._unload(model, merge=False)
    assert all(torch.equal(v, base_state[k]) for k, v in model.state_dict().items())
    assert torch.equal(_outputs(model), ref)


def test_save_load_roundtrip(tmp_path):
    model = _trained()
    path = lora.save_adapters(model, tmp_path / "adapters.safetensors", {"base": "tiny", "steps": 3})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapters.safetensors"]  # no temporary left
    tensors, meta = lora.read_adapters(path)
    assert meta["base"] == "tiny" and meta["steps"] == "3" and meta["rank"] == str(RANK)
    assert meta["targets"] == '["in_proj", "out_proj", "linear1", "linear2"]'
    assert tensors.keys() == lora.lora_state_dict(model).keys()
    loaded = lora.load_adapters(_base(), path)
    assert torch.equal(_outputs(loaded), _outputs(model))
    model_bytes = sum(v.numel() * v.element_size() for v in _base().state_dict().values())
    assert path.stat().st_size < 0.2 * model_bytes


def test_merge_gives_plain_model_with_same_outputs():
    model = _trained()
    expected = _outputs(model)
    merged = lora.merge_lora(model)
    assert type(merged) is MagnetLM and not lora.is_lora(merged)
    reference = _base().state_dict()
    state = merged.state_dict()
    assert list(state) == list(reference)
    assert all(state[k].shape == reference[k].shape for k in reference)
    torch.testing.assert_close(_outputs(merged), expected, rtol=0, atol=1e-5)
    fresh = _base()
    fresh.load_state_dict(state, strict=True)
    torch.testing.assert_close(_outputs(fresh), expected, rtol=0, atol=1e-5)


def test_mismatched_adapters_give_clear_error(tmp_path):
    path = lora.save_adapters(_trained(), tmp_path / "a.safetensors", {"base": "tiny"})
    wider = _base(LMConfig(dim=48, num_heads=2, num_layers=2, text_dim=16, card=64, segment_duration=1.0))
    with pytest.raises(ValueError, match=r"do not fit this model .*file \[4, 32\] vs model \[4, 48\]"):
        lora.load_adapters(wider, path)
    assert not lora.is_lora(wider) and not hasattr(wider.transformer.layers[0].self_attn, "in_proj")
    # metadata claiming another rank than the tensors have
    from safetensors.torch import save_file
    tensors, meta = lora.read_adapters(path)
    save_file(tensors, str(tmp_path / "b.safetensors"), metadata={**meta, "rank": "8"})
    with pytest.raises(ValueError, match=r"do not fit this model"):
        lora.load_adapters(_base(), tmp_path / "b.safetensors")
    save_file(tensors, str(tmp_path / "c.safetensors"))
    with pytest.raises(ValueError, match="not an openmagnet LoRA adapters file"):
        lora.load_adapters(_base(), tmp_path / "c.safetensors")


def test_argument_errors():
    with pytest.raises(ValueError, match="LoRA target 'emb' is not adaptable"):
        lora.apply_lora(_base(), targets=["emb"])
    with pytest.raises(ValueError, match="targets must be a non-empty list"):
        lora.apply_lora(_base(), targets="linear1")
    with pytest.raises(ValueError, match="matches no module"):
        lora.apply_lora(_base(), targets=["encoder.linear1"])
    with pytest.raises(ValueError, match="rank must be a positive integer"):
        lora.apply_lora(_base(), rank=0)
    model = lora.apply_lora(_base(), rank=RANK)
    with pytest.raises(ValueError, match="already has LoRA adapters"):
        lora.apply_lora(model)
    with pytest.raises(ValueError, match="contradicts"):
        lora.save_adapters(model, "unused.safetensors", {"rank": 8})
    with pytest.raises(ValueError, match="has no LoRA adapters"):
        lora.merge_lora(_base())


def test_missing_peft_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(ImportError, match=r"LoRA needs peft: pip install 'openmagnet\[train\]'"):
        lora.apply_lora(_base())
