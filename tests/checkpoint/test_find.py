"""Finding a model's files (openmagnet/checkpoint/find.py): a folder of either layout, one file, the bundled model,
a hub id (only checked here: tests/checkpoint/test_write.py serves one from a fabricated hub cache); and the
one-line errors for what is none of them."""
import pytest

from tests.conftest import FIXTURES
from openmagnet.checkpoint import (CODEC_FILE, CODEC_HF_FILE, CODEC_SAFETENSORS_FILE, LM_FILE, LM_SAFETENSORS_FILE,
                                   CheckpointError, bundled_model_dir, check_hub_id, resolve_file)


def test_a_folder_gives_each_file_in_the_order_of_its_forms(tmp_path):
    assert resolve_file(FIXTURES / "music10", LM_FILE) == FIXTURES / "music10" / LM_FILE
    assert resolve_file(FIXTURES / "music10", CODEC_FILE) == FIXTURES / "music10" / CODEC_FILE
    for name in (LM_SAFETENSORS_FILE, CODEC_SAFETENSORS_FILE, CODEC_HF_FILE):
        (tmp_path / name).write_bytes(b"")
    assert resolve_file(tmp_path, LM_FILE) == tmp_path / LM_SAFETENSORS_FILE  # the LM in safetensors
    assert resolve_file(tmp_path, CODEC_FILE) == tmp_path / CODEC_HF_FILE  # save_pretrained's before the bundled
    (tmp_path / CODEC_HF_FILE).unlink()
    assert resolve_file(tmp_path, CODEC_FILE) == tmp_path / CODEC_SAFETENSORS_FILE
    (tmp_path / LM_FILE).write_bytes(b"")
    assert resolve_file(tmp_path, LM_FILE) == tmp_path / LM_FILE  # audiocraft's own file first


def test_a_file_is_itself_and_the_bundled_model_is_its_folder():
    assert resolve_file(FIXTURES / "music10" / LM_FILE, CODEC_FILE) == FIXTURES / "music10" / LM_FILE
    folder = bundled_model_dir("openmagnet/demo")
    if folder is None:
        pytest.skip("the bundled demo model is not built in this copy")
    assert resolve_file("openmagnet/demo", LM_FILE) == folder / LM_SAFETENSORS_FILE
    assert resolve_file("openmagnet/demo", CODEC_FILE) == folder / CODEC_SAFETENSORS_FILE


def test_what_is_no_model_gets_a_one_line_error(tmp_path):
    with pytest.raises(CheckpointError, match=rf"^{tmp_path} has no {LM_FILE}: a MAGNeT model directory holds "):
        resolve_file(tmp_path, LM_FILE)
    with pytest.raises(CheckpointError, match=r"^no model named \(got ' '\): pass a directory holding "):
        resolve_file(" ", LM_FILE)
    with pytest.raises(CheckpointError, match=r"^\./nowhere: no such local folder or file$"):
        resolve_file("./nowhere", LM_FILE)
    with pytest.raises(CheckpointError, match=r"^magnet: no such local folder or file \(a hub id reads owner/name"):
        resolve_file("magnet", LM_FILE)


@pytest.mark.parametrize("name", ["owner/..", "a/b/c", "owner/repo?x", "owner--x/repo", "owner/repo.", 3])
def test_only_a_hub_id_passes_for_one(name):
    with pytest.raises(CheckpointError, match=r"is not a local file or directory, nor a Hugging Face hub id"):
        check_hub_id(name)
    assert check_hub_id("facebook/magnet-small-10secs") == "facebook/magnet-small-10secs"
