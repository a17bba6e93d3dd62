"""Loading untrusted models (README, "Loading untrusted models"): a scan of the source for every way a file can
run code when it is read, and the hub ids a model name may resolve to.

The scan reads the syntax tree of every module under src/openmagnet (and the scripts under bench/ and recipes/):
torch.load always with weights_only=True, trust_remote_code never given a true value, no pickle / marshal /
dill / joblib / shelve loads, no eval / exec, no unsafe yaml loaders, no TorchScript or torch.hub loading,
numpy.load never with allow_pickle=True, and hf_hub_download called in one place only, for two fixed names."""
import ast
from pathlib import Path

import pytest

from openmagnet import CheckpointError, MAGNeT
from openmagnet.checkpoint import CODEC_FILE, HUB_FILES, LM_FILE, check_hub_id, resolve_codec, resolve_file

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "openmagnet"
SCANNED = sorted(PACKAGE.rglob("*.py")) + sorted((ROOT / "bench").rglob("*.py")) + \
    sorted((ROOT / "recipes").rglob("*.py"))


def dotted(node) -> str:
    """'torch.load' for the expression torch.load, '' for anything that is not a plain dotted name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def calls(path):
    """(line, dotted name of the callee, {keyword: node}) for every call in a module; names imported with
    `from m import f` (or `import m as a`) are written out in full."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            aliases.update({a.asname or a.name: f"{node.module}.{a.name}" for a in node.names})
        elif isinstance(node, ast.Import):
            aliases.update({a.asname: a.name for a in node.names if a.asname})
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = dotted(node.func)
            head, _, rest = name.partition(".")
            name = aliases.get(head, head) + ("." + rest if rest else "")
            yield node.lineno, name, {k.arg: k.value for k in node.keywords if k.arg}


def where(path, line):
    return f"{path.relative_to(ROOT)}:{line}"


def test_the_scan_sees_the_loaders():
    """The scan is not vacuous: it finds the torch.load and yaml.load of the checkpoint package and the one
    hf_hub_download."""
    found = {name for path in (PACKAGE / "checkpoint").glob("*.py") for _, name, _ in calls(path)}
    assert {"torch.load", "huggingface_hub.hf_hub_download", "yaml.load"} <= found
    assert len(SCANNED) > 50


def test_every_torch_load_is_weights_only():
    bad = []
    for path in SCANNED:
        for line, name, kwargs in calls(path):
            if name == "torch.load":
                flag = kwargs.get("weights_only")
                if not (isinstance(flag, ast.Constant) and flag.value is True):
                    bad.append(where(path, line))
    assert not bad, f"torch.load without weights_only=True: {bad}"


def test_trust_remote_code_is_never_true():
    bad = []
    for path in SCANNED:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg == "trust_remote_code":
                if not (isinstance(node.value, ast.Constant) and node.value.value is False):
                    bad.append(where(path, node.value.lineno))
            elif isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values, strict=True):
                    if isinstance(key, ast.Constant) and key.value == "trust_remote_code" and \
                            not (isinstance(value, ast.Constant) and value.value is False):
                        bad.append(where(path, key.lineno))
    assert not bad, f"trust_remote_code given something other than False: {bad}"
    assert not [p for p in PACKAGE.rglob("*.py") if "trust_remote_code" in p.read_text(encoding="utf-8")]


CODE_RUNNING = {"pickle.load", "pickle.loads", "pickle.Unpickler", "_pickle.load", "_pickle.loads", "cPickle.load",
                "cPickle.loads", "dill.load", "dill.loads", "joblib.load", "marshal.load", "marshal.loads",
                "shelve.open", "pandas.read_pickle", "torch.jit.load", "torch.hub.load",
                "torch.package.PackageImporter",
                "eval", "exec", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all", "numpy.load.allow_pickle"}
SAFE_YAML_LOADERS = {"yaml.SafeLoader", "yaml.CSafeLoader", "_xp_loader"}


def test_no_pickle_eval_exec_or_unsafe_loader():
    bad = []
    for path in SCANNED:
        for line, name, kwargs in calls(path):
            if name in CODE_RUNNING:
                bad.append(f"{where(path, line)} {name}")
            elif name == "yaml.load":
                loader = kwargs.get("Loader")
                loader_name = dotted(loader.func if isinstance(loader, ast.Call) else loader) if loader else ""
                if loader_name not in SAFE_YAML_LOADERS:
                    bad.append(f"{where(path, line)} yaml.load with Loader={loader_name or 'the default'}")
            elif name in ("numpy.load", "np.load"):
                flag = kwargs.get("allow_pickle")
                if flag is not None and not (isinstance(flag, ast.Constant) and flag.value is False):
                    bad.append(f"{where(path, line)} {name}(allow_pickle=...)")
    assert not bad, f"loads that can run code from a file: {bad}"


def test_the_hub_is_reached_in_one_place_for_five_files():
    """Downloads (hf_hub_download and the other hub fetchers) are called by checkpoint/find.py's hub_file only, and
    that one refuses any file but the audiocraft pair and the save_pretrained trio; the one other hub call is HfApi,
    in checkpoint/write.py's push_folder, which only uploads."""
    fetchers = {"huggingface_hub.hf_hub_download", "huggingface_hub.snapshot_download", "huggingface_hub.hf_hub_url",
                "huggingface_hub.HfApi", "huggingface_hub.HfFileSystem", "huggingface_hub.cached_download"}
    found = sorted((path.relative_to(PACKAGE).as_posix(), name) for path in PACKAGE.rglob("*.py")
                   for _, name, _ in calls(path) if name in fetchers)
    assert found == [("checkpoint/find.py", "huggingface_hub.hf_hub_download"),
                     ("checkpoint/write.py", "huggingface_hub.HfApi")]
    assert (LM_FILE, CODEC_FILE) == ("state_dict.bin", "compression_state_dict.bin")
    assert HUB_FILES == ("state_dict.bin", "compression_state_dict.bin", "config.json", "model.safetensors",
                         "compression_model.safetensors")
    hub_source = (PACKAGE / "checkpoint" / "write.py").read_text()
    api_uses = [line for line in hub_source.splitlines() if "api." in line]
    assert api_uses and all("api.create_repo(" in line or "api.upload_folder(" in line for line in api_uses)


# ---------------------------------------------------------------------------------------------- hub ids
TRICKS = ["../x", "a/b/../../c", "owner/..", "owner/.", "../../etc/passwd", "owner/repo/../../x", "owner/repo\nx",
          "owner/repo?filename=x", "owner/repo#state_dict.bin", "owner/repo@main", "owner/ repo", "owner//repo",
          "owner/repo/state_dict.bin", "owner/.hidden", "owner/-x", "owner--x/repo", "owner/repo.", "a" * 97,
          "owner/repo%2F..%2Fx", "owner\\repo", "~/x", "owner/repo\x00", "https://huggingface.co/owner/repo", ""]


@pytest.fixture
def hub_calls(monkeypatch):
    """Every hf_hub_download call, answered with a file of the asked-for name that holds no checkpoint."""
    import huggingface_hub

    seen = []

    def fake(repo_id, filename, **kwargs):
        seen.append((repo_id, filename, kwargs))
        raise FileNotFoundError(f"{repo_id}/{filename} is not in this test's hub")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)
    return seen


@pytest.mark.parametrize("name", TRICKS)
def test_hub_id_tricks_are_refused_before_any_download(hub_calls, name):
    with pytest.raises(CheckpointError) as err:
        MAGNeT.get_pretrained(name, device="cpu")
    message = str(err.value)
    assert "\n" not in message and message
    assert hub_calls == [], f"{name!r} reached the hub"
    with pytest.raises(CheckpointError):
        resolve_codec(name)
    assert hub_calls == []


@pytest.mark.parametrize("name", ["facebook/magnet-small-10secs", "owner/repo.v2", "a/b", "A_b/c-D.e"])
def test_hub_ids_ask_for_the_model_files_only(hub_calls, name):
    assert check_hub_id(name) == name
    with pytest.raises(CheckpointError, match=r"is not a local folder, the Hugging Face hub cannot be reached .* its "
                                              r"cache does not hold state_dict\.bin"):
        MAGNeT.get_pretrained(name, device="cpu")
    with pytest.raises(CheckpointError):
        resolve_file(name, CODEC_FILE)
    # a save_pretrained repo is looked for first (config.json; skipped where the hub cache already holds the
    # audiocraft layout of that repo, as this suite's fabricated facebook/* entries), then the audiocraft pair
    asked = [(repo, file) for repo, file, _ in hub_calls]
    audiocraft_pair = [(name, LM_FILE), (name, CODEC_FILE)]
    assert asked in ([(name, "config.json")] + audiocraft_pair, audiocraft_pair)
    assert all("revision" not in kwargs and "subfolder" not in kwargs for _, _, kwargs in hub_calls)


def test_a_bare_word_is_a_missing_folder_never_a_hub_request(hub_calls):
    """Every MAGNeT repo has an owner: `t5-base` as a model is a mistyped folder, said so, and the hub is not asked."""
    assert check_hub_id("t5-base") == "t5-base"
    with pytest.raises(CheckpointError, match=r"^t5-base: no such local folder or file \(a hub id reads owner/name"):
        MAGNeT.get_pretrained("t5-base", device="cpu")
    assert hub_calls == []


def test_only_the_model_files_can_be_fetched(hub_calls):
    from openmagnet.checkpoint import hub_file

    for filename in ("../state_dict.bin", "pytorch_model.bin", "state_dict.bin/../x", "model.safetensors/../x",
                     "../config.json", "tokenizer.json"):
        with pytest.raises(CheckpointError, match="openmagnet fetches only state_dict.bin, compression_state_dict.bin, "
                                                  "config.json, model.safetensors and compression_model.safetensors "
                                                  "from the hub"):
            hub_file("facebook/magnet-small-10secs", filename)
    assert hub_calls == []
