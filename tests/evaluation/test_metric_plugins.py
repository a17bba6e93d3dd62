"""Metrics as plug-ins (openmagnet/evaluation/metrics/): a metric defined and registered in this one file shows
in `openmagnet eval objective --metrics` (its choices and help) and runs end to end on two tiny folders, with
no edit to objective.py or command.py. The toy metric: the gap in RMS level (dB) between each generated clip
and its reference, checked against the level computed by hand from the tones' amplitudes."""
from __future__ import annotations

import json
import math
import typing as tp

import numpy as np
import pytest
import torch

from openmagnet import cli
from openmagnet.audio import audio_write
from openmagnet.evaluation import metrics
from openmagnet.evaluation.metrics import Bootstrap, Clip, Metric, Options, Summary


class LevelGap(Metric):
    name = "level-gap"
    help = "toy: |RMS level of generated - reference| in dB"
    labels = {"level_gap": "level gap (dB)"}

    def __init__(self):
        self.gaps: tp.List[float] = []

    @classmethod
    def load(cls, options: Options) -> "LevelGap":
        return cls()

    def settings(self) -> dict:
        return {"level_gap": {"unit": "dB"}}

    def score(self, clip: Clip) -> dict:
        def level(wav: torch.Tensor) -> float:
            return 20 * math.log10(float(wav.double().pow(2).mean().sqrt()))
        self.gaps.append(abs(level(clip.generated) - level(clip.reference)))
        return {"level_gap": self.gaps[-1]}

    def summarise(self, bootstrap: Bootstrap) -> Summary:
        gaps = np.array(self.gaps)
        return Summary({"level_gap": float(gaps.mean())},
                       {"level_gap": bootstrap.interval(len(gaps), lambda idx: float(gaps[idx].mean()))})


@pytest.fixture
def toy():
    metrics.register(LevelGap)
    yield LevelGap
    metrics.unregister(LevelGap.name)


def _tone(amplitude: float, seconds: float = 0.5, sr: int = 16000) -> torch.Tensor:
    t = torch.arange(int(seconds * sr), dtype=torch.float64) / sr
    return (amplitude * torch.sin(2 * math.pi * 400.0 * t)).float()[None]


def _objective_parser(parser):
    eval_parser = parser._subparsers._group_actions[0].choices["eval"]
    return eval_parser._subparsers._group_actions[0].choices["objective"]


def test_a_registered_metric_is_a_choice_of_eval_objective(toy):
    objective = _objective_parser(cli.build_parser())
    help_text = objective.format_help().replace("\n", " ")
    assert "comma list among fad,kld,clap,chroma,level-gap" in " ".join(help_text.split())
    assert "level-gap: toy: |RMS level of generated - reference| in dB" in " ".join(help_text.split())
    args = cli.build_parser().parse_args(["eval", "objective", "--generated", "g", "--reference", "r",
                                          "--metrics", "kld,level-gap"])
    assert args.metrics == ("kld", "level-gap")
    assert list(metrics.registered())[-1] == "level-gap"  # after the built-ins


def test_an_unregistered_metric_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["eval", "objective", "--generated", "g", "--reference", "r",
                                       "--metrics", "level-gap"])
    assert capsys.readouterr().err.strip().endswith(
        "argument --metrics: unknown metric(s) level-gap; choose among fad, kld, clap, chroma")
    assert "level-gap" not in metrics.registered()


def test_a_registered_metric_runs_end_to_end(toy, tmp_path, capsys):
    gen, ref = tmp_path / "gen", tmp_path / "ref"
    for name, g, r in (("a", 0.1, 0.2), ("b", 0.3, 0.3), ("c", 0.4, 0.1)):
        audio_write(gen / name, _tone(g), 16000, strategy="clip")
        audio_write(ref / name, _tone(r), 16000, strategy="clip")
    code = cli.main(["eval", "objective", "--generated", str(gen), "--reference", str(ref), "--metrics", "level-gap",
                     "--json", str(tmp_path / "r.json"), "--per-clip", str(tmp_path / "r.csv"), "--bootstrap", "50",
                     "--quiet"])
    assert code == 0
    report = json.loads((tmp_path / "r.json").read_text())
    expected = [20 * math.log10(2), 0.0, 20 * math.log10(4)]  # sine levels: 20 log10(a / sqrt 2), so ratios only
    assert report["level_gap"] == pytest.approx(sum(expected) / 3, abs=1e-3)  # 16-bit wav rounding
    assert report["settings"]["level_gap"] == {"unit": "dB"} and report["settings"]["metrics"] == ["level-gap"]
    assert report["n_clips"] == 3 and min(expected) - 1e-3 <= report["intervals"]["level_gap"]["low"]
    assert report["intervals"]["level_gap"]["high"] <= max(expected) + 1e-3
    header, *rows = (tmp_path / "r.csv").read_text().splitlines()
    assert header.split(",")[-1] == "level_gap" and len(rows) == 3
    assert f"| level gap (dB) | {report['level_gap']:.4f} |" in capsys.readouterr().out


def test_a_metric_needs_a_name_a_help_line_and_its_own_name():
    class Nameless(Metric):
        help = "x"

    class Mute(Metric):
        name = "mute"

    class Fad(Metric):
        name, help = "fad", "another FAD"

    with pytest.raises(ValueError, match=r"^a metric needs a name of letters, digits, - or _ \(got None on Nameless"):
        metrics.register(Nameless)
    with pytest.raises(ValueError, match=r"^metric 'mute' needs a help line"):
        metrics.register(Mute)
    with pytest.raises(ValueError, match=r"^metric 'fad' is already registered by openmagnet\.evaluation\.metrics"
                                         r"\.fad\.FAD$"):
        metrics.register(Fad)
