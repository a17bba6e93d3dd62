"""Configs (openmagnet/config.py): the generation settings a model may store in its xp.cfg."""
import pytest

from openmagnet.config import generation_from_xp


def test_generation_settings_from_xp():
    assert generation_from_xp({}) is None and generation_from_xp({"openmagnet": {"version": "x"}}) is None
    assert generation_from_xp({"openmagnet": {"generation": {"top_k": 5}}}) == {"top_k": 5}
    with pytest.raises(ValueError, match=r"^xp.cfg openmagnet.generation must be a mapping of set_generation_params"
                                         r"\(\) keywords, got list$"):
        generation_from_xp({"openmagnet": {"generation": [1]}})
    with pytest.raises(ValueError, match=r"^xp.cfg openmagnet.generation has unknown keys \['temp'\]"):
        generation_from_xp({"openmagnet": {"generation": {"temp": 1.0}}})
    with pytest.raises(ValueError, match=r"^temperature must be >= 0; got -1"):
        generation_from_xp({"openmagnet": {"generation": {"temperature": -1}}})
