"""`import openmagnet.data` (openmagnet/data/__init__.py) stays light."""
import subprocess
import sys


def test_import_is_light():
    code = ("import sys, openmagnet.data; "
            "print([m for m in ('soundfile', 'julius', 'transformers') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
