"""Where a model name points, and the quick look at the hub (openmagnet/locate.py): offline, a hub id or a mistyped
folder is a one-line error in seconds, not after a minute of huggingface_hub's retries, without HF_HUB_OFFLINE; a
model already in the cache still loads. The hub is faked by a local port: closed (nothing answers), or a tiny HTTP
server (it answers), so the tests hold with or without a network."""
import http.server
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import HUB_CACHE, HUB_ID
from openmagnet import locate


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the socket is: connections are refused at once


@pytest.fixture
def fresh(monkeypatch):
    monkeypatch.setattr(locate, "_answers", {})
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


def test_a_closed_endpoint_is_unreachable_at_once(fresh, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    started = time.monotonic()
    why = locate.hub_unreachable()
    assert why is not None and why.startswith("http://127.0.0.1:") and "refused" in why.lower()
    assert time.monotonic() - started < locate.HUB_CHECK_SECONDS + 1
    assert locate.cache_only("owner/name") and not locate.cache_only(str(HUB_CACHE))  # a folder never asks
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert locate.hub_unreachable() == "offline mode is on (HF_HUB_OFFLINE)"


def test_an_answering_endpoint_is_reachable_whatever_its_status(fresh, monkeypatch):
    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):  # noqa: N802 - http.server's name
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
        assert locate.hub_unreachable() is None
    finally:
        server.shutdown()


def test_names_that_can_only_be_mistyped_folders():
    assert locate.missing_path("nonexistent-dir") == ("nonexistent-dir: no such local folder or file (a hub id reads "
                                                      "owner/name, e.g. facebook/magnet-small-10secs)")
    assert locate.missing_path("./models/first") == "./models/first: no such local folder or file"
    assert locate.missing_path("facebook/magnet-small-10secs") is None  # a hub id: the hub decides
    assert locate.missing_path("openmagnet/demo") is None  # bundled
    assert locate.missing_path(str(HUB_CACHE)) is None  # exists


def _cli(args, **env):
    """`openmagnet ARGS` in a fresh process, with HF_HUB_OFFLINE unset: (exit code, stderr, seconds)."""
    environ = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    environ.update(env)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "openmagnet", *args], capture_output=True, text=True, env=environ,
                          timeout=120)
    return done.returncode, done.stderr, time.monotonic() - started


@pytest.mark.parametrize("model, message", [
    ("facebook/magnet-small-10secs",
     "openmagnet: error: facebook/magnet-small-10secs is not a local folder, the Hugging Face hub cannot be reached "
     "(http://127.0.0.1:{port}: Connection refused) and its cache does not hold state_dict.bin: use a local model "
     "folder (--model DIR) holding state_dict.bin and compression_state_dict.bin, or download it where the hub can "
     "be reached (HF_HUB_OFFLINE=1 uses the Hugging Face cache without this check)\n"),
    ("nonexistent-dir",
     "openmagnet: error: nonexistent-dir: no such local folder or file (a hub id reads owner/name, e.g. "
     "facebook/magnet-small-10secs)\n"),
])
def test_cli_offline_fails_in_one_line_and_seconds(tmp_path, model, message):
    """Offline (the hub's endpoint a closed port, an empty cache), without HF_HUB_OFFLINE: one line, no traceback, no
    retries (the first-hour report waited 47-74 s here), and --out is left as it was."""
    port = closed_port()
    code, err, seconds = _cli(["generate", "x", "--model", model, "--out", str(tmp_path / "out")],
                              HF_ENDPOINT=f"http://127.0.0.1:{port}", HF_HUB_CACHE=str(tmp_path / "cache"))
    assert (code, err) == (2, message.format(port=port))
    assert seconds < 20  # well under huggingface_hub's minute of retries even on a loaded machine
    assert not (tmp_path / "out").exists()


def test_a_cached_model_loads_while_the_hub_cannot_be_reached(tmp_path):
    """Without HF_HUB_OFFLINE and with the hub unreachable, a model in the cache loads from it (no retries)."""
    code = ("import time; t = time.monotonic(); from openmagnet import MAGNeT; "
            f"m = MAGNeT.get_pretrained({HUB_ID!r}, device='cpu'); print(m.sample_rate, round(time.monotonic() - t))")
    environ = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    environ.update(HF_ENDPOINT=f"http://127.0.0.1:{closed_port()}", HF_HUB_CACHE=str(HUB_CACHE))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environ, timeout=300)
    assert done.returncode == 0, done.stderr
    rate, seconds = done.stdout.split()
    assert rate == "32000" and int(seconds) < 60


def test_training_codecs_offline():
    """`--codec openmagnet/demo` is the bundled model's codec (it went to the hub); an EnCodec id that the cache
    lacks is a one-line error naming HF_HUB_OFFLINE at once (it waited through the retries)."""
    from openmagnet.checkpoint import CheckpointError, resolve_codec

    codec, package = resolve_codec("openmagnet/demo")
    assert codec.sample_rate == 16000 and "best_state" in package
    started = time.monotonic()
    with pytest.raises(CheckpointError) as err:
        resolve_codec("facebook/encodec_48khz")
    assert "HF_HUB_OFFLINE" in str(err.value) and "\n" not in str(err.value)
    assert time.monotonic() - started < 20


@pytest.mark.parametrize("shown", [True, False])
def test_quiet_progress_bars_restores_the_users_setting(shown):
    """Converting and saving hide transformers' bars, and leave the user's choice as it was, also after an error."""
    pytest.importorskip("transformers")
    from transformers.utils import logging as hf_logging

    from openmagnet.locate import quiet_progress_bars

    (hf_logging.enable_progress_bar if shown else hf_logging.disable_progress_bar)()
    try:
        with pytest.raises(RuntimeError), quiet_progress_bars():
            assert not hf_logging.is_progress_bar_enabled()
            raise RuntimeError("boom")
        assert hf_logging.is_progress_bar_enabled() is shown
    finally:
        hf_logging.enable_progress_bar()
