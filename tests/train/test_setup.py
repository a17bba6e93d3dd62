"""How a training run starts (openmagnet/train/setup.py): the precision a run resolves to on each kind of
machine, and the one way into a run, fresh, fine-tuned (--continue-from) or resumed, which builds the model,
derives the config from it and reads each manifest once."""
import pytest
import torch

from openmagnet.train import setup
from tests.train.conftest import SMALL, _solver
from tests.train.test_solver import NO_BF16, _fake_cpu


def test_precision_resolution(monkeypatch):
    from openmagnet import hardware
    from openmagnet.train.setup import resolve_precision

    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    for native, auto in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(hardware, "cpu_info", lambda native=native: _fake_cpu(native))
        assert resolve_precision("auto", cpu) == auto
        assert resolve_precision("fp32", cpu) == "fp32"
        assert resolve_precision("auto", cuda) == "fp16"  # as released, whatever the CPU
        assert resolve_precision("bf16", cuda) == "bf16"
    assert resolve_precision("auto", torch.device("mps")) == "fp32"
    monkeypatch.setattr(hardware, "cpu_info", lambda: _fake_cpu(True))
    assert resolve_precision("bf16", cpu) == "bf16"
    monkeypatch.setattr(hardware, "cpu_info", lambda: _fake_cpu(False))
    with pytest.raises(ValueError) as err:
        resolve_precision("bf16", cpu)
    assert str(err.value) == f"--precision bf16 refused: {NO_BF16}: use --precision auto or fp32"
    with pytest.raises(ValueError) as err:
        resolve_precision("bf16", cpu, resume=True)
    assert str(err.value) == (f"--precision bf16 refused: {NO_BF16}: resume this run where its precision is "
                              f"fast (a CPU with native bf16, or CUDA)")
    with pytest.raises(ValueError, match=r"^--precision fp16 refused: float16 matrix products run at about 1 "
                                         r"GFLOP/s on CPU \(.*\): use --precision auto or fp32 \(fp16 is for CUDA\)$"):
        resolve_precision("fp16", cpu)


@pytest.fixture
def manifest_reads(monkeypatch):
    """The manifest folders read through setup.load_data, in order."""
    reads = []

    def counting(path):
        reads.append(str(path))
        return read(path)

    read = setup.read_manifest
    monkeypatch.setattr(setup, "read_manifest", counting)
    return reads


def test_each_way_into_a_run_reads_each_manifest_once(manifest, tmp_path, manifest_reads):
    valid = str(manifest)  # a separate --valid manifest folder (the same files)
    run = tmp_path / "run"
    _solver(manifest, run, max_steps=2, save_every=2, valid_every=2).run()
    assert manifest_reads == [str(manifest)]
    manifest_reads.clear()
    # fine-tune from the run: the model first, then the config true to it, then the data, once
    tuned = _solver(manifest, tmp_path / "tuned", continue_from=str(run), valid=valid, max_steps=1,
                    segment_duration=2.0)
    assert manifest_reads == [str(manifest), valid]
    assert tuned.cfg.segment_duration == 1.0 and tuned.train_set.segment_duration == 1.0  # the model's, not the flag's
    assert tuned.cfg.codec == str(run) and tuned.setup.codec_spec == str(run)
    manifest_reads.clear()
    _solver(manifest, run, resume=True)
    assert manifest_reads == [str(manifest)]


def test_a_fine_tune_records_its_source_and_a_resume_keeps_it(manifest, tmp_path):
    import json

    run = tmp_path / "run"
    _solver(manifest, run, max_steps=1, save_every=1, valid_every=1).run()
    tuned = tmp_path / "tuned"
    _solver(manifest, tuned, continue_from=str(run), max_steps=1, save_every=1, valid_every=1).run()
    info = json.loads((tuned / "run.json").read_text())
    assert info["source"] == str(run) and info["config"]["codec"] == str(run)
    resumed = _solver(manifest, tuned, resume=True)
    spec = setup.run_spec(tuned, None, None, resume=True)
    assert spec.source == str(run) and spec.cfg == resumed.cfg
    assert resumed.setup.lm_cfg == setup.build_model(spec, tuned, torch.device("cpu")).lm_cfg


def test_a_fine_tune_records_the_architecture_it_trains(manifest, tmp_path):
    """run.json of a --continue-from run says the model's architecture, not --model-scale's default ('small' for a
    run whose model came from the 256-wide demo, in the first-hour report)."""
    import json

    from openmagnet.train.presets import preset_config
    from openmagnet.train.solver import Solver

    run = tmp_path / "run"
    _solver(manifest, run, max_steps=1, save_every=1, valid_every=1).run()  # SMALL: 32 wide, 2 heads, 2 layers
    tuned = tmp_path / "tuned"
    fine = {k: v for k, v in SMALL.items() if k not in ("model_scale", "dim", "num_heads", "num_layers")}
    solver = Solver(preset_config("magnet_32khz", **{**fine, "max_steps": 1, "save_every": 1, "valid_every": 1}),
                    str(manifest), str(tuned), progress=False, continue_from=str(run))
    solver.run()
    config = json.loads((tuned / "run.json").read_text())["config"]
    assert (config["model_scale"], config["dim"], config["num_heads"], config["num_layers"]) == ("custom", 32, 2, 2)
    assert solver.cfg.architecture() == dict(dim=32, num_heads=2, num_layers=2)


def test_a_new_run_needs_data(tmp_path):
    from openmagnet.train.presets import preset_config

    with pytest.raises(ValueError,
                       match=r"^--data is required: the manifest folder written by `openmagnet data index`$"):
        setup.run_spec(tmp_path / "run", preset_config("magnet_32khz", **SMALL), None)


def test_resume_accepts_the_runs_own_settings_restated(manifest, tmp_path):
    run = tmp_path / "run"
    solver = _solver(manifest, run, max_steps=1, save_every=1, valid_every=1)
    solver.run()
    same = {"lr": solver.cfg.lr, "betas": tuple(solver.cfg.betas), "max_steps": 2}
    assert setup.run_spec(run, None, None, resume=True, resume_overrides=same).cfg.max_steps == 2
    with pytest.raises(ValueError, match=r"^--resume continues the run as it was configured; lr cannot change"):
        setup.run_spec(run, None, None, resume=True, resume_overrides={"lr": solver.cfg.lr * 2})
