"""Musicality measures of audio alone (openmagnet/evaluation/musicality.py): rhythm regularity, pitch salience,
DC offset, onset density and the fast/slow tempo probe, on signals whose answer is known by construction."""
from __future__ import annotations

import numpy as np
import pytest

from openmagnet.evaluation import musicality as m
from openmagnet.evaluation.weights import CREPE_FULL, find_weights

SR = 16000


def _clicks(times, seconds=10.0, sr=SR):
    """Decaying 1 kHz blips at the given times (s)."""
    y = np.zeros(int(seconds * sr), dtype=np.float32)
    blip = (np.sin(2 * np.pi * 1000 * np.arange(800) / sr) * np.exp(-np.arange(800) / 150)).astype(np.float32)
    for t in times:
        i = int(t * sr)
        y[i:i + len(blip)] += blip[:len(y) - i]
    return 0.5 * y


def test_a_steady_beat_is_regular_and_random_onsets_are_not():
    steady = m.rhythm_regularity(_clicks(np.arange(0.1, 9.9, 0.5)), SR)   # 120 bpm
    random = m.rhythm_regularity(_clicks(np.sort(np.random.default_rng(0).uniform(0.1, 9.9, 20))), SR)
    assert steady > 0.9
    assert random < 0.5
    assert m.rhythm_regularity(np.zeros(SR * 10), SR) == 0.0  # no onsets at all


def test_onset_rate_counts_clicks():
    for per_second in (1.0, 2.0, 4.0):
        rate = m.onset_rate(_clicks(np.arange(0.1, 9.9, 1 / per_second)), SR)
        assert abs(rate - per_second) <= 0.15 * per_second, (per_second, rate)


def test_dc_offset_is_the_mean():
    t = np.arange(SR) / SR
    assert m.dc_offset(0.25 + 0.5 * np.sin(2 * np.pi * 100 * t)) == pytest.approx(0.25, abs=1e-9)
    assert m.clip_musicality(np.stack([np.full(SR * 3, 0.1), np.full(SR * 3, -0.3)]), SR)['dc_offset'] == \
        pytest.approx(-0.1)


def test_tempo_probe_ratio_and_interval():
    bpms = [170, 180, 165, 60, 62, 64, 120]
    rates = [6.0, 6.0, 6.0, 2.0, 2.0, 2.0, 100.0]   # the 120-bpm clip is in neither group
    probe = m.tempo_probe(rates, bpms)
    assert probe['ratio'] == pytest.approx(3.0)
    assert probe['low'] == pytest.approx(3.0) and probe['high'] == pytest.approx(3.0)
    assert (probe['fast'], probe['slow']) == (3, 3)
    assert m.tempo_probe([1.0, 2.0, 3.0], [170, 60, 120]) is None  # one clip per group: no interval


def test_bootstrap_median_interval_holds_the_median():
    values = np.random.default_rng(1).normal(0.5, 0.1, 64)
    out = m.bootstrap_median(values)
    assert out['median'] == pytest.approx(float(np.median(values)))
    assert out['low'] <= out['median'] <= out['high']
    assert m.bootstrap_median([0.3, 0.3, 0.3]) == {'median': 0.3, 'low': 0.3, 'high': 0.3}
    with pytest.raises(ValueError, match="at least 2 values"):
        m.bootstrap_median([0.3])


def test_summary_row_and_table():
    clips = [{'rhythm_regularity': 0.8, 'dc_offset': 0.02, 'onset_rate': 6.0},
             {'rhythm_regularity': 0.6, 'dc_offset': -0.001, 'onset_rate': 6.0},
             {'rhythm_regularity': 0.7, 'dc_offset': 0.0, 'onset_rate': 2.0},
             {'rhythm_regularity': 0.9, 'dc_offset': 0.0, 'onset_rate': 2.0}]
    row = m.summarise(clips, [170, 175, 60, 62])
    assert row['max_abs_dc'] == pytest.approx(0.02) and row['dc_over_001'] == 0.25
    assert row['rhythm_regularity']['median'] == pytest.approx(0.75)
    assert 'pitch_salience' not in row
    table = m.markdown_table({'generated': row})
    assert '| generated | 0.75 [' in table and '3.00 [3.00, 3.00]' in table


@pytest.mark.skipif(find_weights(CREPE_FULL) is None, reason="CREPE weights absent: run `openmagnet eval fetch-crepe`")
def test_pitch_salience_of_a_tone_and_of_noise():
    from openmagnet.evaluation.crepe import Crepe

    crepe = Crepe.load()
    t = np.arange(SR * 2) / SR
    assert m.pitch_salience(0.4 * np.sin(2 * np.pi * 330 * t), SR, crepe) > 0.9
    assert m.pitch_salience(0.3 * np.random.default_rng(0).standard_normal(SR * 2), SR, crepe) < 0.1
