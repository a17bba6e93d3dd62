"""Text-adherence metrics (openmagnet/evaluation/adherence.py): tempo, key and instrument-family estimators on
synthetic signals, the MIREX key score, and ceiling > floor on a tiny rendered synth set.

Skips without the `eval` extra (pip install -e '.[eval]'); the rendered-set test also needs the synth renderer
(see tests/data/test_synth.py); that test is in tests/evaluation/test_command.py.
"""
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("librosa", reason="needs the eval extra: pip install -e '.[eval]'")
pytest.importorskip("sklearn", reason="needs the eval extra: pip install -e '.[eval]'")

from openmagnet.evaluation.adherence import (FamilyClassifier, clip_features, derangement, estimate_key,  # noqa: E402
                                             estimate_tempo, markdown_table, pitch_class, prompted_families,
                                             tempo_match, weighted_key_score)

SR = 22050


def click_track(bpm: float, seconds: float = 8.0) -> np.ndarray:
    """Decaying 1 kHz clicks on every beat."""
    y = np.zeros(int(seconds * SR), dtype=np.float32)
    click = np.sin(2 * np.pi * 1000 * np.arange(400) / SR) * np.exp(-np.arange(400) / 80)
    for start in (np.arange(0, seconds, 60 / bpm) * SR).astype(int):
        y[start:start + 400] += click[:len(y) - start]
    return y


def triads(chords, seconds: float = 1.0) -> np.ndarray:
    """Each chord (MIDI pitches) for `seconds`, as tones with 4 decaying harmonics plus the root an octave down."""
    t = np.arange(int(seconds * SR)) / SR
    out = []
    for chord in chords:
        tone = np.zeros_like(t)
        for pitch in list(chord) + [chord[0] - 12]:
            f0 = 440 * 2 ** ((pitch - 69) / 12)
            tone += sum(np.sin(2 * np.pi * h * f0 * t) / h for h in range(1, 5))
        out.append(tone * np.exp(-t))
    return (np.concatenate(out) / 8).astype(np.float32)


def test_import_costs_nothing():
    code = ("import sys, openmagnet, openmagnet.evaluation, openmagnet.evaluation.command; "
            "print([m for m in ('librosa', 'sklearn', 'openmagnet.evaluation.adherence') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("bpm", [90, 120, 150])
def test_tempo_of_click_tracks(bpm):
    assert tempo_match(estimate_tempo(click_track(bpm), SR), bpm, allow_octave=False)


def test_tempo_match_octaves_and_tolerance():
    assert tempo_match(123.0, 120) and not tempo_match(131.0, 120)
    assert tempo_match(60.0, 120) and tempo_match(240.0, 120) and not tempo_match(60.0, 120, allow_octave=False)
    with pytest.raises(ValueError, match="target tempo"):
        tempo_match(100.0, 0)


@pytest.mark.parametrize("chords, key", [
    ([(60, 64, 67), (65, 69, 72), (67, 71, 74), (60, 64, 67)], ('c', 'major')),    # C F G C
    ([(57, 60, 64), (62, 65, 69), (64, 68, 71), (57, 60, 64)], ('a', 'minor')),    # Am Dm E Am
    ([(66, 70, 73), (71, 75, 78), (73, 77, 80), (66, 70, 73)], ('f#', 'major')),   # F# B C# F#
])
def test_key_of_triad_progressions(chords, key):
    assert estimate_key(triads(chords), SR) == key


def test_weighted_key_score_hand_cases():
    assert weighted_key_score(('c', 'major'), ('C', 'major')) == 1.0
    assert weighted_key_score(('g', 'major'), ('c', 'major')) == 0.5        # a fifth above
    assert weighted_key_score(('f', 'major'), ('c', 'major')) == 0.0        # a fifth below (mir_eval default)
    assert weighted_key_score(('f', 'major'), ('c', 'major'), allow_descending_fifths=True) == 0.5
    assert weighted_key_score(('a', 'minor'), ('c', 'major')) == 0.3        # relative minor
    assert weighted_key_score(('eb', 'major'), ('c', 'minor')) == 0.3       # relative major
    assert weighted_key_score(('c', 'minor'), ('c', 'major')) == 0.2        # parallel
    assert weighted_key_score(('d', 'major'), ('c', 'major')) == 0.0
    assert pitch_class('Db') == pitch_class('c#') == 1 and pitch_class('b') == 11
    with pytest.raises(ValueError, match="not a note name"):
        pitch_class('h')


def test_family_classifier_separates_sine_and_noise(tmp_path):
    rng = np.random.default_rng(0)
    t = np.arange(SR // 2) / SR
    waves, labels = [], []
    for i in range(36):
        kind = [['sine'], ['noise'], ['sine', 'noise']][i % 3]
        y = np.zeros_like(t)
        if 'sine' in kind:
            y += np.sin(2 * np.pi * rng.uniform(200, 2000) * t)
        if 'noise' in kind:
            y += rng.uniform(0.3, 1.0) * rng.standard_normal(len(t))
        waves.append(y.astype(np.float32))
        labels.append(kind)
    features = np.stack([clip_features(w, SR) for w in waves])
    model = FamilyClassifier(families=('sine', 'noise'), hidden=16).fit_features(features[:24], labels[:24])
    truth = model.targets(labels[24:])
    assert ((model.predict_proba(features[24:]) >= 0.5) == truth).all()
    model.save(tmp_path / 'clf.npz')
    loaded = FamilyClassifier.load(tmp_path / 'clf.npz')
    assert np.allclose(loaded.predict_proba(features), model.predict_proba(features))
    with pytest.raises(ValueError, match="unknown families"):
        model.targets([['drums']])


def test_prompted_families_and_derangement():
    labels = {'description': 'Trumpet over drums, jazz', 'family': ['bass', 'brass', 'drums'],
              'parts': [{'family': 'brass', 'name': 'trumpet'}, {'family': 'drums', 'name': 'drums'},
                        {'family': 'bass', 'name': 'upright bass'}]}
    assert prompted_families(labels) == ['brass', 'drums']
    perm = derangement(10, seed=3)
    assert sorted(perm) == list(range(10)) and (perm != np.arange(10)).all()
    assert '| ceiling | 3 |' in markdown_table({'ceiling': {'clips': 3}})


def test_bootstrap_margin_on_known_sets():
    from openmagnet.evaluation.adherence import bootstrap_margin

    sure = bootstrap_margin([1.0] * 20, [0.0] * 20)
    assert sure == {'margin': 1.0, 'low': 1.0, 'high': 1.0}
    coin = [float(i % 2) for i in range(64)]
    same = bootstrap_margin(coin, coin[::-1], seed=1)
    assert same['margin'] == 0.0 and same['low'] < 0 < same['high']
    # 64 clips at 0.5 against 0.25: the interval is about +-0.16 wide (two binomial standard errors, combined)
    half, quarter = coin, [float(i % 4 == 0) for i in range(64)]
    m = bootstrap_margin(half, quarter, seed=2)
    assert m['margin'] == 0.25 and 0.06 < m['low'] < 0.14 and 0.36 < m['high'] < 0.44
    assert bootstrap_margin([None, 1.0, 0.0, float('nan')], [0.0, 0.0])['margin'] == 0.5  # missing values dropped
    with pytest.raises(ValueError, match='at least 2 values on each side, got 1 and 2'):
        bootstrap_margin([None, 1.0], [0.0, 1.0])
