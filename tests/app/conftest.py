"""Shared by the app tests: the fixture model and the fast decoding steps."""
import shutil
from pathlib import Path

from openmagnet.app.security import Policy
from tests.conftest import FIXTURES


MODEL = str(FIXTURES / "music10")  # tiny random-weight model in the released layout
FAST = (2, 1, 1, 1)
FIXTURE_POLICY = Policy(model_dirs=(FIXTURES,))  # the engine may load the fixture models by path
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
EMPTY_PROMPT = ("The prompt is empty: describe the audio you want, e.g. \"upbeat funk groove with slap bass and "
                "drums\" (one prompt per line), or upload audio to continue.")
