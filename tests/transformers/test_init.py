"""openmagnet.transformers: the transformers versions it accepts, and its registration with the Auto classes."""
import subprocess
import sys
import textwrap

import pytest

import openmagnet.transformers as face


@pytest.mark.parametrize("version", [f"{face.TRANSFORMERS_MIN}.0", "5.25.1", "5.99.0.dev0"])
def test_tested_versions_pass(version):
    face.check_transformers_version(version)


@pytest.mark.parametrize("version", ["4.57.1", "5.0.0", "5.19.9", "6.0.0", "garbage"])
def test_other_versions_are_refused_in_one_line(version):
    with pytest.raises(ImportError) as err:
        face.check_transformers_version(version)
    wanted = face.TRANSFORMERS_RANGE
    assert str(err.value) == (f"openmagnet.transformers needs transformers{wanted}, but {version} is installed: "
                              f"pip install 'transformers{wanted}'")


def test_import_with_an_old_transformers_fails_before_importing_it():
    """The version is read from the package metadata, so an old transformers is refused before its import."""
    code = textwrap.dedent("""
        import importlib.metadata, sys
        real = importlib.metadata.version
        importlib.metadata.version = lambda name: "4.46.3" if name == "transformers" else real(name)
        try:
            import openmagnet.transformers
        except ImportError as exc:
            print(exc)
        print("transformers" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    wanted = face.TRANSFORMERS_RANGE
    assert out.stdout == (f"openmagnet.transformers needs transformers{wanted}, but 4.46.3 is installed: pip install "
                          f"'transformers{wanted}'\nFalse\n")


def test_registration_maps_model_type_magnet():
    from transformers import AutoConfig, AutoModelForTextToWaveform, AutoProcessor
    from transformers.models.auto.modeling_auto import MODEL_FOR_TEXT_TO_WAVEFORM_MAPPING
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING

    assert type(AutoConfig.for_model("magnet")) is face.MagnetConfig
    assert MODEL_FOR_TEXT_TO_WAVEFORM_MAPPING[face.MagnetConfig] is face.MagnetForConditionalGeneration
    assert PROCESSOR_MAPPING[face.MagnetConfig] is face.MagnetProcessor
    face.register()  # again: a no-op
    assert AutoModelForTextToWaveform and AutoProcessor


def test_pyproject_pins_the_tested_range():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert f'"transformers{face.TRANSFORMERS_RANGE}"' in text
