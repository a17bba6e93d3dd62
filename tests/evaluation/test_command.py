"""`openmagnet eval adherence` (openmagnet/evaluation/command.py): ceiling > floor on a tiny rendered
synth set. Skips without the `eval` extra, or without the synth renderer (see tests/data/test_synth.py)."""
import argparse
import json

import pytest

pytest.importorskip("librosa", reason="needs the eval extra: pip install -e '.[eval]'")
pytest.importorskip("sklearn", reason="needs the eval extra: pip install -e '.[eval]'")

from openmagnet.evaluation.command import add_eval_parser  # noqa: E402
from tests.data.conftest import needs_synth  # noqa: E402


@needs_synth
def test_ceiling_beats_floor_on_rendered_clips(tmp_path, capsys):
    from openmagnet.data.synth import synthesize_dataset

    synthesize_dataset(tmp_path, hours=0.001, seed=0, clip_seconds=(6.0, 6.0), holdout=8, progress=False)
    parser = argparse.ArgumentParser()
    add_eval_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["eval", "adherence", "--labels", str(tmp_path / 'holdout'), "--audio",
                              str(tmp_path / 'holdout' / 'audio'), "--json", str(tmp_path / 'm.json'), "--quiet"])
    assert args.func(args) == 0
    table = capsys.readouterr().out
    assert 'generated' in table and 'shuffled prompts (floor)' in table
    rows = json.loads((tmp_path / 'm.json').read_text())
    ceiling, floor = rows['real rendered clips (ceiling)'], rows['shuffled prompts (floor)']
    assert ceiling['clips'] == floor['clips'] == 8 and rows['generated'] == ceiling
    assert ceiling['tempo_acc2'] + ceiling['key_weighted'] > floor['tempo_acc2'] + floor['key_weighted'] + 0.5
