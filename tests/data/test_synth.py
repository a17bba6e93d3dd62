"""`openmagnet data synth`: rendering, resume and the CLI (openmagnet/data/synth.py); the clip-spec sampler and
captions are tested in tests/data/test_compose.py.

Tests that render skip when pretty_midi, FluidSynth (pyfluidsynth or the fluidsynth program) or a General MIDI
SoundFont is missing: `apt-get install fluidsynth fluid-soundfont-gm` and `pip install -e '.[synth]'`.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from openmagnet.cli import main
from openmagnet.data import check_metadata, load_music_info, read_manifest
from openmagnet.data.compose import FAMILIES, compose, sample_spec
from openmagnet.data.synth import find_soundfont, render, synthesize_dataset
from tests.data.conftest import SHORT, needs_synth


# --------------------------------------------------------------------------- the sampler (no rendering)


def test_import_stays_light():
    code = "import sys, openmagnet.data; print([m for m in ('pretty_midi', 'fluidsynth') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == '[]'


# --------------------------------------------------------------------------- rendering

@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    """Two short clips and one holdout clip, seed 5."""
    out = tmp_path_factory.mktemp('synth') / 'data'
    result = synthesize_dataset(out, hours=4 / 3600, seed=5, clip_seconds=SHORT, holdout=1, progress=False)
    return out, result


@needs_synth
def test_dataset_layout_and_json(dataset):
    out, result = dataset
    assert (result.clips, result.holdout, result.rendered) == (2, 1, 3)
    metas = read_manifest(out)
    assert [Path(m.path).name for m in metas] == ['clip_000000.wav', 'clip_000001.wav']
    check_metadata(metas, 'music')
    check_metadata(read_manifest(out / 'holdout'), 'music')
    for meta in metas:
        info, raw = load_music_info(meta.info_path), json.loads(Path(meta.info_path).read_text())
        assert info.key == f"{raw['tonic']} {raw['mode']}" and info.bpm == raw['bpm'] and isinstance(raw['bpm'], int)
        assert info.artist == 'openmagnet synth' and info.instrument in FAMILIES and info.description
        assert raw['family'] == sorted({p['family'] for p in raw['parts']}) and info.moods and info.keywords
    record = json.loads((out / 'synth.json').read_text())
    assert record['complete'] and record['clips'] == 2 and len(record['soundfont_sha256_1mb']) == 64


@needs_synth
def test_audio_is_non_silent_with_the_right_length_and_rate(dataset):
    import soundfile

    out, _ = dataset
    for meta in read_manifest(out):
        wav, rate = soundfile.read(meta.path, dtype='float32')
        assert rate == 32000 and wav.ndim == 1 and len(wav) == round(2.0 * 32000)
        assert 0.5 < abs(wav).max() <= 1.0 and (wav ** 2).mean() ** 0.5 > 0.01


@needs_synth
def test_same_seed_is_bit_identical_and_other_seeds_differ(dataset, tmp_path):
    out, _ = dataset
    again = synthesize_dataset(tmp_path / 'again', hours=2 / 3600, seed=5, clip_seconds=SHORT, progress=False)
    other = synthesize_dataset(tmp_path / 'other', hours=2 / 3600, seed=6, clip_seconds=SHORT, progress=False)
    clip = 'audio/clip_000000'
    assert (again.out / f'{clip}.wav').read_bytes() == (out / f'{clip}.wav').read_bytes()
    assert (again.out / f'{clip}.json').read_text() == (out / f'{clip}.json').read_text()
    assert (other.out / f'{clip}.wav').read_bytes() != (out / f'{clip}.wav').read_bytes()
    assert (out / 'holdout' / f'{clip}.wav').read_bytes() != (out / f'{clip}.wav').read_bytes()


@needs_synth
def test_resume_skips_finished_clips_and_refuses_other_settings(tmp_path):
    out = tmp_path / 'data'
    synthesize_dataset(out, hours=4 / 3600, seed=0, clip_seconds=SHORT, progress=False)
    kept = (out / 'audio' / 'clip_000000.wav').stat().st_mtime_ns
    (out / 'audio' / 'clip_000001.json').unlink()  # as if interrupted before the clip was complete
    result = synthesize_dataset(out, hours=6 / 3600, seed=0, clip_seconds=SHORT, progress=False)
    assert (result.clips, result.rendered) == (3, 2)
    assert (out / 'audio' / 'clip_000000.wav').stat().st_mtime_ns == kept
    assert len(read_manifest(out)) == 3
    with pytest.raises(ValueError, match="other settings.*seed"):
        synthesize_dataset(out, hours=6 / 3600, seed=1, clip_seconds=SHORT, progress=False)
    with pytest.raises(ValueError, match=r"other settings \(tempo: 'style' -> 'wide'\)"):
        synthesize_dataset(out, hours=6 / 3600, seed=0, clip_seconds=SHORT, tempo='wide', progress=False)
    with pytest.raises(ValueError, match=r"other settings \(drums: 'style' -> 'always'\)"):
        synthesize_dataset(out, hours=6 / 3600, seed=0, clip_seconds=SHORT, drums='always', progress=False)


@needs_synth
def test_cli_renderer_matches_the_length():
    import shutil

    if not shutil.which('fluidsynth'):
        pytest.skip("the fluidsynth program is not installed")
    spec = sample_spec(3, 0, SHORT)
    audio = render(compose(spec), spec.seconds, 16000, find_soundfont(), renderer='cli')
    assert audio.shape == (32000,) and abs(audio).max() > 0.01


@needs_synth
def test_cli_end_to_end(tmp_path, capsys):
    out = tmp_path / 'data'
    argv = ['data', 'synth', '--out', str(out), '--hours', str(30 / 3600), '--seed', '3', '--clip-seconds', '10',
            '--workers', '2', '--holdout', '1', '--quiet']
    assert main(argv) == 0
    assert 'synth: 3 clips' in capsys.readouterr().out
    assert len(read_manifest(out)) == 3 and len(read_manifest(out / 'holdout')) == 1
    assert main(argv) == 0 and '0 rendered now' in capsys.readouterr().out
    assert main(['data', 'synth', '--out', str(out), '--hours', '0', '--quiet']) == 2
    assert '--hours must be > 0' in capsys.readouterr().err


def test_without_the_synth_extra_one_line_and_nothing_written(tmp_path, monkeypatch, capsys):
    """Without pretty_midi (the synth extra), `data synth` says which extra to install in one line (it ended in a
    ModuleNotFoundError traceback) and writes nothing, so the retry is not refused."""
    monkeypatch.setitem(sys.modules, 'pretty_midi', None)  # import pretty_midi now raises ModuleNotFoundError
    out = tmp_path / 'data'
    assert main(['data', 'synth', '--out', str(out), '--hours', str(4 / 3600), '--quiet']) == 2
    assert capsys.readouterr().err == (
        "openmagnet: error: data synth needs the synth extra: pip install 'openmagnet[synth]' (pretty_midi, "
        "pyfluidsynth), and FluidSynth with a General MIDI SoundFont (apt-get install fluidsynth fluid-soundfont-gm)\n")
    assert not out.exists()


@needs_synth
def test_a_folder_with_no_clip_yet_does_not_bind_the_settings(tmp_path):
    """A run that stopped before its first clip (other renderer, other seed) leaves a synth.json that must not refuse
    the next run's settings; once a clip is there, other settings are refused as before."""
    out = tmp_path / 'data'
    out.mkdir()
    (out / 'synth.json').write_text(json.dumps({'version': 0, 'seed': 9, 'renderer': 'cli', 'complete': False}))
    result = synthesize_dataset(out, hours=2 / 3600, seed=0, clip_seconds=SHORT, progress=False)
    assert result.rendered == 1 and json.loads((out / 'synth.json').read_text())['seed'] == 0
    with pytest.raises(ValueError, match="other settings.*seed"):
        synthesize_dataset(out, hours=2 / 3600, seed=1, clip_seconds=SHORT, progress=False)
