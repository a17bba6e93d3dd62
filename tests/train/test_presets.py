"""Training presets and --set overrides (openmagnet/train/presets.py)."""
import pytest

from openmagnet.train.presets import parse_override, preset_config


def test_fsdp_with_lora_is_refused():
    with pytest.raises(ValueError) as err:
        preset_config("magnet_32khz", fsdp=True, lora_rank=8)
    assert str(err.value) == ("fsdp and lora_rank cannot be combined (LoRA under FSDP is not supported): train "
                              "the adapters with DDP (drop --fsdp)")


def test_overrides():
    assert parse_override("lr=0.5") == ("lr", 0.5)
    assert parse_override("betas=0.9,0.99") == ("betas", (0.9, 0.99))
    assert parse_override("fsdp=true") == ("fsdp", True)
    with pytest.raises(ValueError, match="--set nope: unknown training setting"):
        parse_override("nope=1")
    with pytest.raises(ValueError, match=r"--set lr=fast: expected a float"):
        parse_override("lr=fast")


def test_a_short_run_gets_a_short_warm_up_and_says_so():
    """The preset's 4000-step warm-up kept a 20-step fine-tune's learning rate at or below 5e-7 (valid CE 4.7302 ->
    4.7301): a run shorter than ten warm-ups warms up over a tenth of its steps, with a warning; a warm-up that was
    asked for is kept, and the released runs' lengths keep the released warm-up."""
    import warnings

    from openmagnet.train.optim import lr_factor

    with pytest.warns(UserWarning, match=r"^the magnet_32khz preset's warm-up of 4000 steps is longer than a tenth of "
                                         r"this run's 20 steps: warming up over 2 instead \(--set warmup=N to choose\)$"):
        cfg = preset_config("magnet_32khz", max_steps=20)
    assert cfg.warmup == 2 and lr_factor(2, cfg.schedule, cfg.warmup, cfg.max_steps) > 0.99
    assert lr_factor(20, "cosine", 4000, 20) * 1e-4 == pytest.approx(5e-7)  # what it was: no learning at all
    with pytest.warns(UserWarning, match="warm-up of 3000 steps .* over 500 instead"):
        assert preset_config("audio_magnet_16khz", max_steps=5000).warmup == 500
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert preset_config("magnet_32khz", max_steps=20, warmup=4000).warmup == 4000  # asked for
        assert preset_config("magnet_32khz", max_steps=20, warmup=0).warmup == 0
        assert preset_config("magnet_32khz").warmup == 4000  # 10^6 steps, as released
        assert preset_config("magnet_32khz", max_steps=40000).warmup == 4000


def test_a_custom_scale_needs_its_sizes():
    cfg = preset_config("magnet_32khz", model_scale="custom", dim=256, num_heads=4, num_layers=6)
    assert cfg.architecture() == dict(dim=256, num_heads=4, num_layers=6)
    with pytest.raises(ValueError, match=r"^model scale 'custom' needs dim, num_heads and num_layers"):
        preset_config("magnet_32khz", model_scale="custom", dim=256)
