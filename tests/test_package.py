"""Package-level rules: the import budget of `import openmagnet`."""
import subprocess
import sys

# (tqdm is not listed: torch itself imports it, through torch.hub)
HEAVY = ("transformers", "huggingface_hub", "soundfile", "pyloudnorm", "julius", "gradio", "xformers",
         "yaml", "scipy", "librosa", "sentencepiece", "matplotlib", "playwright")


def test_import_loads_only_torch():
    code = ("import sys, openmagnet; from openmagnet import MAGNeT; import openmagnet.codec; "
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
