"""Does it sound like music at all? Measures of the audio alone, before any question of following the text
(issue 32): rhythm regularity, pitch salience, DC offset and onset density, with bootstrap intervals, and the
tempo probe (do clips for fast prompts have more onsets than clips for slow ones?).

    rhythm_regularity(wav, sr)        # peak of the onset envelope's autocorrelation over beat-length lags, 0..1
    pitch_salience(wav, sr, crepe)    # share of frames where CREPE is confident of one pitch, 0..1
    dc_offset(wav)                    # mean of the samples
    onset_rate(wav, sr)               # detected onsets per second

A rendered synth clip scores about 0.8 on rhythm regularity (a steady beat repeats its onset pattern) and a
clip of broadband noise with random transients about 0.1-0.2. These measures are the same for the ceiling
(rendered clips) and the floor (rendered clips under shuffled prompts): they do not depend on the prompt, so
the floor row is the ceiling's; the tempo probe does depend on it. librosa (the `eval` extra) is imported
inside the functions; CREPE's weights come from `openmagnet eval fetch-crepe`.
"""
from __future__ import annotations

import typing as tp

import numpy as np

from .adherence import ANALYSIS_SR, load_librosa, analysis_mono, read_audio

HOP = 512
MIN_BPM, MAX_BPM = 40.0, 300.0  # the beat periods searched by rhythm_regularity
CONFIDENT = 0.5                 # CREPE confidence above which a frame counts as pitched
FAST_BPM, SLOW_BPM = 160.0, 64.0  # the tempo probe: prompts at or above / at or below


def onset_envelope(y: np.ndarray) -> np.ndarray:
    """librosa's onset strength (median over mel bands, as for tempo estimation) of mono audio at ANALYSIS_SR."""
    return load_librosa().onset.onset_strength(y=y, sr=ANALYSIS_SR, hop_length=HOP, aggregate=np.median)


def rhythm_regularity(wav: tp.Any, sr: int) -> float:
    """The highest normalised autocorrelation of the mean-removed onset envelope at lags of one beat of 40-300
    bpm (0.2-1.5 s): near 1 when the onset pattern repeats exactly, near 0 for onsets at random. 0 for a clip
    too short for a 1.5-s lag or without any onset."""
    env = onset_envelope(analysis_mono(wav, sr))
    env = env - env.mean()
    frame_rate = ANALYSIS_SR / HOP
    low, high = int(np.floor(frame_rate * 60 / MAX_BPM)), int(np.ceil(frame_rate * 60 / MIN_BPM))
    energy = float(np.dot(env, env))
    if len(env) <= 2 * high or energy <= 1e-12:
        return 0.0
    # unbiased by the overlap: the product sum at lag k over the n - k overlapping frames, scaled back to n
    ac = np.array([np.dot(env[:-k], env[k:]) * len(env) / (len(env) - k) for k in range(low, high + 1)])
    return float(np.clip(ac.max() / energy, 0.0, 1.0))


def pitch_salience(wav: tp.Any, sr: int, crepe: tp.Any, hop: float = 0.05, threshold: float = CONFIDENT) -> float:
    """The share of `hop`-spaced frames whose CREPE confidence (largest bin probability) is at least `threshold`."""
    import torch

    y = torch.as_tensor(np.asarray(wav.detach().cpu() if hasattr(wav, 'detach') else wav, dtype=np.float32))
    y = y[None] if y.dim() == 1 else y
    return float((crepe.confidence(y, sr, hop=hop) >= threshold).float().mean())


def dc_offset(wav: tp.Any) -> float:
    """The mean sample value over all channels."""
    return float(np.asarray(wav.detach().cpu() if hasattr(wav, 'detach') else wav, dtype=np.float64).mean())


def pick_peaks(env: np.ndarray, delta: float = 0.07, around: float = 0.03, average: float = 0.1,
               wait: float = 0.03) -> np.ndarray:
    """Indices of onsets in an onset envelope, by librosa's onset_detect rule written in numpy (librosa's own
    peak picker is numba-compiled, which crashes on some CPUs): the envelope scaled to [0, 1]; a frame is an
    onset where it is the maximum of the `around` seconds before it and the frame after, exceeds the mean of the
    `average` seconds around it by `delta`, and comes at least `wait` seconds after the previous onset."""
    fps = ANALYSIS_SR / HOP
    span = env.max() - env.min() if len(env) else 0.0
    if span <= 0:
        return np.zeros(0, dtype=np.int64)
    x = (env - env.min()) / span
    pre_max, pre_avg, post_avg = int(around * fps), int(average * fps), int(average * fps) + 1
    gap, peaks, last = int(wait * fps), [], -np.inf
    for i in range(len(x)):
        if x[i] < x[max(0, i - pre_max):i + 2].max():
            continue
        if x[i] < x[max(0, i - pre_avg):i + post_avg].mean() + delta or i - last <= gap:
            continue
        peaks.append(i)
        last = i
    return np.asarray(peaks, dtype=np.int64)


def onset_rate(wav: tp.Any, sr: int) -> float:
    """Onsets per second: peaks of the onset envelope (`pick_peaks`)."""
    y = analysis_mono(wav, sr)
    env = load_librosa().onset.onset_strength(y=y, sr=ANALYSIS_SR, hop_length=HOP)
    return float(len(pick_peaks(env)) / (len(y) / ANALYSIS_SR))


def clip_musicality(wav: tp.Any, sr: int, crepe: tp.Any = None) -> tp.Dict[str, float]:
    """All four measures of one clip [T] or [C, T]; pitch salience only with a CREPE model."""
    y = analysis_mono(wav, sr)
    out = {'rhythm_regularity': rhythm_regularity(y, ANALYSIS_SR), 'dc_offset': dc_offset(wav),
           'onset_rate': onset_rate(y, ANALYSIS_SR)}
    if crepe is not None:
        out['pitch_salience'] = pitch_salience(wav, sr, crepe)
    return out


def bootstrap_median(values: tp.Sequence[float], confidence: float = 0.95, resamples: int = 5000,
                     seed: int = 0) -> tp.Dict[str, float]:
    """The median of `values` and the percentile bootstrap interval of the median."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        raise ValueError(f"a bootstrap interval needs at least 2 values, got {len(x)}")
    rng = np.random.default_rng(seed)
    medians = np.median(x[rng.integers(0, len(x), (resamples, len(x)))], axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(medians, [tail, 100 - tail])
    return {'median': float(np.median(x)), 'low': float(low), 'high': float(high)}


def tempo_probe(rates: tp.Sequence[float], bpms: tp.Sequence[float], resamples: int = 5000,
                seed: int = 0) -> tp.Optional[tp.Dict[str, float]]:
    """Mean onsets per second of clips for fast prompts (>= FAST_BPM) over that of clips for slow prompts
    (<= SLOW_BPM), with a 95 % bootstrap interval of the ratio (each group resampled); None with fewer than two
    clips in either group."""
    rates, bpms = np.asarray(rates, dtype=float), np.asarray(bpms, dtype=float)
    fast, slow = rates[bpms >= FAST_BPM], rates[bpms <= SLOW_BPM]
    if len(fast) < 2 or len(slow) < 2 or slow.mean() <= 0:
        return None
    rng = np.random.default_rng(seed)
    f = fast[rng.integers(0, len(fast), (resamples, len(fast)))].mean(1)
    s = slow[rng.integers(0, len(slow), (resamples, len(slow)))].mean(1)
    ratios = f / np.maximum(s, 1e-9)
    low, high = np.percentile(ratios, [2.5, 97.5])
    return {'ratio': float(fast.mean() / slow.mean()), 'low': float(low), 'high': float(high),
            'fast_rate': float(fast.mean()), 'slow_rate': float(slow.mean()), 'fast': len(fast), 'slow': len(slow)}


def summarise(per_clip: tp.Sequence[tp.Mapping[str, float]], bpms: tp.Sequence[float],
              seed: int = 0) -> tp.Dict[str, tp.Any]:
    """One row: medians with bootstrap intervals of rhythm regularity and pitch salience, the largest |DC|, the
    share of clips with |DC| > 0.01 and the tempo probe over the prompts' bpm."""
    row: tp.Dict[str, tp.Any] = {'clips': len(per_clip)}
    for key in ('rhythm_regularity', 'pitch_salience'):
        if per_clip and key in per_clip[0]:
            row[key] = bootstrap_median([c[key] for c in per_clip], seed=seed)
    dc = np.abs([c['dc_offset'] for c in per_clip])
    row['max_abs_dc'] = float(dc.max())
    row['dc_over_001'] = float((dc > 0.01).mean())
    row['tempo_probe'] = tempo_probe([c['onset_rate'] for c in per_clip], bpms, seed=seed)
    return row


def analyse_files(paths: tp.Sequence[tp.Any], crepe: tp.Any = None,
                  progress: bool = False) -> tp.List[tp.Dict[str, float]]:
    from tqdm import tqdm

    return [clip_musicality(*read_audio(p), crepe=crepe)
            for p in tqdm(paths, desc='musicality', unit='clip', disable=not progress)]


def _interval(cell: tp.Optional[tp.Mapping[str, float]], fmt: str = '{:.2f}') -> str:
    if not cell:
        return '-'
    return f"{fmt.format(cell['median'])} [{fmt.format(cell['low'])}, {fmt.format(cell['high'])}]"


def markdown_table(rows: tp.Mapping[str, tp.Mapping[str, tp.Any]]) -> str:
    """One line per audio set: rhythm regularity and pitch salience (median [95 % interval]), max |DC|, share of
    clips with |DC| > 0.01, onsets/s of fast-prompt over slow-prompt clips [95 % interval]."""
    lines = ['| audio | rhythm regularity, median [95 %] | pitch salience, median [95 %] | max abs DC | '
             'clips with abs DC > 0.01 | onsets/s fast / slow prompts [95 %] |', '|---|---|---|---|---|---|']
    for name, row in rows.items():
        probe = row.get('tempo_probe')
        tempo = (f"{probe['ratio']:.2f} [{probe['low']:.2f}, {probe['high']:.2f}] "
                 f"({probe['fast_rate']:.2f} / {probe['slow_rate']:.2f}; {probe['fast']} + {probe['slow']} clips)"
                 if probe else '-')
        lines.append(f"| {name} | {_interval(row.get('rhythm_regularity'))} | "
                     f"{_interval(row.get('pitch_salience'))} | {row['max_abs_dc']:.4f} | "
                     f"{row['dc_over_001']:.2f} | {tempo} |")
    return '\n'.join(lines)
