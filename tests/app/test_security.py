"""What guards the web app (openmagnet/app/security.py and the `app` command's flags): logins, the warning
when the page is reachable from other machines, --share, allowed models, upload limits and output names.
Every refusal is one line naming the problem and the fix."""
import os
import random
import re
import socket

import numpy as np
import pytest
import soundfile

from openmagnet.app.engine import AppError, Engine, Request, listed_models, load_prompt_audio
from openmagnet.app.security import Policy, check_model, check_share, check_upload, exposure_warning, \
    output_stem, parse_login, read_auth_file
from openmagnet.cli import main
from tests.app.conftest import FAST, FIXTURE_POLICY, MODEL
from tests.conftest import FIXTURES


def one_line(message: str) -> str:
    assert "\n" not in message and "\r" not in message and len(message) < 400, message
    return message


def wav_file(path, seconds: float, sample_rate: int = 8000):
    soundfile.write(path, np.zeros(int(seconds * sample_rate), dtype="float32"), sample_rate)
    return str(path)


# ---------------------------------------------------------------------------------------------- logins
def test_logins_from_flags_and_files(tmp_path):
    assert parse_login("alice:s3:cr:et") == ("alice", "s3:cr:et")  # the password may hold colons
    for bad in ("alice", ":pw", "alice:", " :pw"):
        with pytest.raises(ValueError) as e:
            parse_login(bad)
        assert one_line(str(e.value)) == ("--auth is not USER:PASSWORD (a user name, a colon, a password): "
                                          "write it as alice:s3cret")
    good = tmp_path / "logins"
    good.write_text("# who may log in\nalice:pw1\n\n  bob:pw:2  \n")
    assert read_auth_file(good) == [("alice", "pw1"), ("bob", "pw:2")]
    bad = tmp_path / "bad"
    bad.write_text("alice:pw1\ncarol-without-password\n")
    with pytest.raises(ValueError) as e:
        read_auth_file(bad)
    assert one_line(str(e.value)).startswith(f"--auth-file {bad} line 2 is not USER:PASSWORD")
    assert "carol" not in str(e.value)  # a login line is never echoed
    empty = tmp_path / "empty"
    empty.write_text("# nothing\n")
    with pytest.raises(ValueError, match=rf"^--auth-file {empty} holds no login: write one USER:PASSWORD per line$"):
        read_auth_file(empty)
    with pytest.raises(ValueError, match=r"^--auth-file /no/file: cannot be read \(No such file or directory\): "):
        read_auth_file("/no/file")


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_no_warning_on_this_machine_only(host):
    assert exposure_warning(host, has_auth=False) is None


def test_warning_when_reachable_without_login():
    text = one_line(exposure_warning("0.0.0.0", has_auth=False))
    assert text.startswith("openmagnet: WARNING: the app is served to every network this machine is on "
                           "(--host 0.0.0.0) with no login.")
    assert "Add --auth USER:PASSWORD or --auth-file FILE" in text
    assert exposure_warning("0.0.0.0", has_auth=True) is None
    assert "a public gradio.live link" in exposure_warning("127.0.0.1", has_auth=False, share=True)


def test_share_needs_a_login():
    with pytest.raises(ValueError) as e:
        check_share(True, has_auth=False, share_unsafe=False)
    assert one_line(str(e.value)) == ("--share publishes the page on a public gradio.live link and no login is set: "
                                      "add --auth USER:PASSWORD or --auth-file FILE (or --share-unsafe to share "
                                      "it open)")
    check_share(True, has_auth=True, share_unsafe=False)
    check_share(True, has_auth=False, share_unsafe=True)
    check_share(False, has_auth=False, share_unsafe=False)


# ---------------------------------------------------------------------------------------------- the command
@pytest.fixture
def launched(monkeypatch):
    """Run `openmagnet app` up to gradio's launch, recording what launch was given instead of serving."""
    pytest.importorskip("gradio", reason="the app extra is not installed: pip install 'openmagnet[app]'")
    import openmagnet.app.ui as ui

    calls = []

    class Page:
        def launch(self, **kw):
            calls.append(kw)

    monkeypatch.setattr(ui, "build_app", lambda engine, default_model=None: calls.append(engine) or Page())
    return calls


def test_cli_passes_logins_and_upload_limit_to_gradio(launched, tmp_path, capsys):
    logins = tmp_path / "logins"
    logins.write_text("bob:pw2\n")
    assert main(["app", "--host", "0.0.0.0", "--auth", "alice:pw1", "--auth-file", str(logins), "--out",
                 str(tmp_path / "out"), "--max-upload-mb", "2", "--max-upload-seconds", "30",
                 "--model-dir", str(FIXTURES)]) == 0
    engine, kw = launched
    assert kw["auth"] == [("alice", "pw1"), ("bob", "pw2")] and kw["max_file_size"] == 2 * 1024 * 1024
    assert kw["server_name"] == "0.0.0.0" and kw["share"] is False
    assert engine.policy == Policy(model_dirs=(FIXTURES,), max_upload_mb=2, max_upload_seconds=30)
    assert capsys.readouterr().err == ""  # a login is set: no warning


def test_cli_warns_when_open_beyond_this_machine(launched, tmp_path, capsys):
    assert main(["app", "--host", "0.0.0.0", "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert err.startswith("openmagnet: WARNING:") and err.count("\n") == 1  # one paragraph
    assert launched[1]["auth"] is None and launched[1]["max_file_size"] == 50 * 1024 * 1024
    assert launched[0].policy == Policy()  # the safe defaults: listed models, 50 MB, 120 s
    assert main(["app", "--share-unsafe", "--out", str(tmp_path)]) == 0
    assert launched[3]["share"] is True and "gradio.live" in capsys.readouterr().err


@pytest.mark.parametrize("args,message", [
    (["--share"], "--share publishes the page on a public gradio.live link and no login is set: add --auth "
                  "USER:PASSWORD or --auth-file FILE (or --share-unsafe to share it open)"),
    (["--auth", "alice"], "--auth is not USER:PASSWORD (a user name, a colon, a password): write it as alice:s3cret"),
    (["--auth-file", "/no/file"], "--auth-file /no/file: cannot be read (No such file or directory): give a UTF-8 "
                                  "text file with one USER:PASSWORD per line"),
    (["--model-dir", "/no/models"], "--model-dir /no/models: no such folder: create it or give the folder that "
                                    "holds your model directories"),
    (["--max-upload-mb", "0"], "--max-upload-mb must be a number above 0, got 0.0: e.g. --max-upload-mb 50"),
    (["--max-upload-seconds", "nan"], "--max-upload-seconds must be a number above 0, got nan: "
                                      "e.g. --max-upload-seconds 120"),
])
def test_cli_refusals_are_one_line(launched, args, message, tmp_path, capsys):
    assert main(["app", "--out", str(tmp_path), *args]) == 2
    assert capsys.readouterr().err == f"openmagnet: error: {message}\n"
    assert not launched  # refused before anything is served


# ---------------------------------------------------------------------------------------------- models
def test_models_are_limited_to_the_list_and_the_model_dirs(tmp_path):
    listed = listed_models()
    assert "openmagnet/demo" in listed and "facebook/magnet-small-10secs" in listed
    closed = Policy()
    assert check_model(" facebook/magnet-small-10secs ", closed, listed) == "facebook/magnet-small-10secs"
    for name in (MODEL, "facebook/other", "/etc", "~/.ssh", "x\x00y"):
        with pytest.raises(AppError) as e:
            check_model(name, closed, listed)
        assert one_line(str(e.value)).endswith("is not one this server offers: pick a listed model (whoever runs "
                                               "the app can allow more with --model-dir DIR or --allow-any-model).")
    assert check_model(MODEL, Policy(known_models=(MODEL,)), listed) == MODEL  # the server's own --model
    assert check_model("anything/at-all", Policy(allow_any_model=True), listed) == "anything/at-all"

    inside = tmp_path / "models" / "mine"
    inside.mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    (tmp_path / "models" / "link").symlink_to(tmp_path / "secret")
    policy = Policy(model_dirs=(tmp_path / "models",))
    assert check_model(str(inside), policy, listed) == str(inside.resolve())
    assert check_model(str(tmp_path / "models" / "a" / ".." / "mine"), policy, listed) == str(inside.resolve())
    for name in (str(tmp_path / "models" / ".." / "secret"), str(tmp_path / "models" / "link"), "facebook/other"):
        with pytest.raises(AppError) as e:
            check_model(name, policy, listed)
        assert one_line(str(e.value)).endswith("pick a listed model, or a model directory inside the server's "
                                               "--model-dir folders (whoever runs the app can allow more with "
                                               "--model-dir DIR or --allow-any-model).")
    with pytest.raises(AppError, match=r"^Model 'x\\n\\x1b\[31m" + "a" * 53 + r"\.\.\.' is not"):  # escaped, cut
        check_model("x\n\x1b[31m" + "a" * 500, policy, listed)


def test_engine_refuses_a_model_before_queueing(tmp_path):
    engine = Engine(tmp_path)  # the default policy: listed models only
    with pytest.raises(AppError, match=r"^Model '.*music10' is not one this server offers"):
        engine.generate(Request(model=MODEL, prompts="x", device="cpu"))
    assert engine._model is None  # nothing was loaded


# ---------------------------------------------------------------------------------------------- uploads
def test_uploads_above_the_limits_are_refused(tmp_path):
    long = wav_file(tmp_path / "long.wav", 3.0)  # 48 kB
    with pytest.raises(AppError) as e:
        check_upload(long, Policy(max_upload_mb=0.01))
    assert one_line(str(e.value)) == ("The uploaded file (long.wav) is 0.0458 MB, above this server's 0.01 MB limit: "
                                      "upload a shorter or more compressed recording.")
    with pytest.raises(AppError) as e:
        check_upload(long, Policy(max_upload_seconds=2))
    assert one_line(str(e.value)) == ("The uploaded audio (long.wav) lasts 3.0 s, above this server's 2 s limit: "
                                      "upload an excerpt of at most 2 s (only its start is used).")
    assert check_upload(long, Policy()) == 3.0
    with pytest.raises(AppError, match=r"^The uploaded audio \(long.wav\) lasts 3.0 s"):
        load_prompt_audio(long, 32000, 1, 1.0, 9.98, Policy(max_upload_seconds=2))
    with pytest.raises(AppError, match=r"^The uploaded file \(gone.wav\) is gone from the server: upload it again\.$"):
        check_upload(tmp_path / "gone.wav", Policy())


# ---------------------------------------------------------------------------------------------- outputs
HOSTILE = ["../../etc/passwd", "/abs/path", "a\\b\\..\\c", "x\x00y", "\x1b[31mred\r\nline", "." * 300, "",
           "é" * 1000, "🎵🎶", "Café del Mar", "CON", "name.wav", " ", None]
STEM = re.compile(r"^20260101-120000_0[0-7]_[a-z0-9_]{1,48}_[0-9a-f]{8}$")


def _check_stem(out, text, index=0):
    stem = output_stem(out, text, index, "20260101-120000")
    assert stem.parent == out.resolve() and STEM.match(stem.name), (text, stem.name)
    return stem


@pytest.mark.parametrize("text", HOSTILE)
def test_output_names_stay_in_the_output_folder(tmp_path, text):
    stem = _check_stem(tmp_path, text, 3)
    assert _check_stem(tmp_path, text, 3) != stem  # a fresh suffix each time: never overwritten


def test_output_names_fold_accents_and_bound_length(tmp_path):
    assert _check_stem(tmp_path, "Café del Mar").name.startswith("20260101-120000_00_cafe_del_mar_")
    assert _check_stem(tmp_path, "x" * 1000).name.startswith("20260101-120000_00_" + "x" * 48 + "_")
    rng = random.Random(0)  # random text over all of unicode, controls and separators included
    for _ in range(300):
        _check_stem(tmp_path, "".join(chr(rng.randrange(0x110000)) for _ in range(rng.randrange(0, 80)))
                    .encode("utf-8", "replace").decode("utf-8", "replace"))


def test_output_names_property(tmp_path):
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import strategies as st

    @hypothesis.settings(max_examples=200, deadline=None)
    @hypothesis.given(st.one_of(st.none(), st.text(max_size=300)), st.integers(0, 7))
    def check(text, index):
        _check_stem(tmp_path, text, index)

    check()


def test_engine_writes_hostile_prompts_inside_out(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    engine = Engine(out, policy=FIXTURE_POLICY)
    prompt = "../../escaped/\x00" + "é" * 200
    outcome = engine.generate(Request(model=MODEL, prompts=prompt, steps=FAST, seed=1, device="cpu"))
    names = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert [p.parent for p in out.iterdir()] == [out, out] and len(names) == 2
    assert all(re.match(r"^\d{8}-\d{6}_00_escaped_e{40}_[0-9a-f]{8}\.(wav|png)$", n) for n in names), names
    assert outcome.clips[0].audio.resolve().parent == out.resolve()


# ---------------------------------------------------------------------------------------------- served
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_served_page_needs_the_login_and_shows_refusals(tmp_path):
    pytest.importorskip("gradio", reason="the app extra is not installed: pip install 'openmagnet[app]'")
    import httpx
    from gradio_client import Client, handle_file

    from openmagnet.app import serve

    port = _free_port()
    out = tmp_path / "out"
    demo = serve(port=port, model=MODEL, out_dir=out, block=False, auth=[("alice", "pw1")],
                 max_upload_mb=1, max_upload_seconds=5)
    url = f"http://127.0.0.1:{port}/"
    try:
        with pytest.raises(ValueError, match="(?i)credentials|login"):  # gradio_client's AuthenticationError
            Client(url, verbose=False)
        client = Client(url, auth=("alice", "pw1"), verbose=False)

        def run(prompt="x", model=MODEL, audio=None):
            values = client.predict(model, prompt, "stride1", "cpu", False, 1, 1, *FAST, 3.0, 0.9, 10.0, 1.0,
                                    audio, 1.0, api_name="/run")
            return values[0]

        assert run(model="/etc").startswith("**Error:** Model '/etc' is not one this server offers: pick a listed")
        long = wav_file(tmp_path / "long.wav", 6.0)
        assert run(audio=handle_file(long)) == ("**Error:** The uploaded audio (long.wav) lasts 6.0 s, above this "
                                                "server's 5 s limit: upload an excerpt of at most 5 s (only its "
                                                "start is used).")
        big = {"files": ("big.wav", open(long, "rb").read() + os.urandom(2 * 1024 * 1024))}  # 2 MB
        with httpx.Client(base_url=url) as http:  # gradio itself refuses it at the upload, before storing it
            assert http.post("gradio_api/upload", files=big).status_code == 401  # no login
            assert http.post("login", data={"username": "alice", "password": "pw1"}).status_code == 200
            assert http.post("gradio_api/upload", files=big).status_code == 413
        assert run("../../evil/\x00name").startswith("**Done:** Generated 1 clip(s)")
        assert [p.parent == out for p in out.iterdir()] == [True, True]
    finally:
        demo.close()
