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
