"""Does the music follow the text? Tempo, key and instrument families estimated from audio, scored against
the labels of the prompt that produced it (issue 6; the labels are `openmagnet data synth` side-car JSON).

    bpm = estimate_tempo(wav, sr)                      # librosa onset strength + tempo estimation
    tonic, mode = estimate_key(wav, sr)                # chroma . Krumhansl-Kessler profiles, 24 keys
    clf = FamilyClassifier().fit(paths, families)      # multi-label GM families from log-mel statistics
    print(markdown_table(reference_rows('synth/holdout', clf)))   # ceiling (true labels), floor (shuffled)

Metrics: tempo acc1 (within 8 %) and acc2 (also half / double tempo), as in Gouyon et al. 2006 and MIREX
audio tempo estimation; key exact / mode accuracy and the MIREX weighted key score (mir_eval.key); family
per-class F1, mean average precision and the rate at which the families a prompt names are detected.
librosa and scikit-learn (the `eval` extra) are imported inside the functions.
"""
from __future__ import annotations

import dataclasses
import json
import os
import typing as tp
from pathlib import Path

import numpy as np

from ..audio import audio_read
from ..data.compose import FAMILIES, TONICS
from ..files import atomic_file

PathLike = tp.Union[str, os.PathLike]
ANALYSIS_SR = 22050
# Krumhansl & Kessler (1982) probe-tone ratings, tonic first
KK_MAJOR = (6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88)
KK_MINOR = (6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17)
_LETTERS = {'c': 0, 'd': 2, 'e': 4, 'f': 5, 'g': 7, 'a': 9, 'b': 11}
_INSTALL = "install the eval extra: pip install 'openmagnet[eval]'"


def load_librosa():
    """librosa, imported on first use. numba (librosa's JIT) 0.68 with llvmlite 0.50 compiles code for AMD Zen 4
    (AVX-512) that crashes the process (librosa.util.peak_pick, chroma_cqt: segmentation faults measured on a
    2-core Zen 4 VM); for generic x86-64 it runs everywhere. So unless the user chose a target, numba is pointed
    at the generic CPU before it is first imported (the functions it compiles here are not hot)."""
    import sys

    if "numba" not in sys.modules:
        os.environ.setdefault("NUMBA_CPU_NAME", "generic")
    try:
        import librosa
    except ImportError:
        raise ImportError(f"librosa is missing; {_INSTALL}") from None
    return librosa


def analysis_mono(wav: tp.Any, sr: int, target_sr: int = ANALYSIS_SR) -> np.ndarray:
    """Float32 mono numpy audio at target_sr from [T], [C, T] (numpy or torch) audio at sr."""
    y = np.asarray(wav.detach().cpu() if hasattr(wav, 'detach') else wav, dtype=np.float32)
    if y.ndim not in (1, 2) or y.shape[-1] == 0:
        raise ValueError(f"audio must be [T] or [C, T] with T > 0, got shape {y.shape}")
    y = y.mean(axis=0) if y.ndim == 2 else y
    return y if sr == target_sr else load_librosa().resample(y, orig_sr=sr, target_sr=target_sr)


# --------------------------------------------------------------------------- tempo

def estimate_tempo(wav: tp.Any, sr: int) -> float:
    """Global tempo in bpm: librosa's onset-strength autocorrelation tempogram with its log-normal prior
    around 120 bpm (so half / double tempo errors happen; acc2 forgives them)."""
    librosa = load_librosa()
    y = analysis_mono(wav, sr)
    envelope = librosa.onset.onset_strength(y=y, sr=ANALYSIS_SR, hop_length=512, aggregate=np.median)
    return float(librosa.feature.tempo(onset_envelope=envelope, sr=ANALYSIS_SR, hop_length=512)[0])


def tempo_match(estimated: float, target: float, tolerance: float = 0.08, allow_octave: bool = True) -> bool:
    """|estimated - target| <= tolerance * target (acc1); with allow_octave also against target / 2 and 2 target
    (acc2; Gouyon's acc2 adds factors 3 and 1/3, which 4/4 synth music does not need)."""
    if not target > 0:
        raise ValueError(f"target tempo must be > 0 bpm, got {target}")
    factors = (1.0, 0.5, 2.0) if allow_octave else (1.0,)
    return any(abs(estimated - f * target) <= tolerance * f * target for f in factors)


# --------------------------------------------------------------------------- key

def pitch_class(name: str) -> int:
    """0..11 from a note name such as 'c', 'C#', 'eb', 'Bb', 'f♯'."""
    text = name.strip().lower()
    if not text or text[0] not in _LETTERS or any(c not in '#b♯♭' for c in text[1:]):
        raise ValueError(f"not a note name: {name!r}; use e.g. 'c', 'f#' or 'bb'")
    return (_LETTERS[text[0]] + sum(1 if c in '#♯' else -1 for c in text[1:])) % 12


def label_key(labels: tp.Mapping[str, tp.Any]) -> tp.Tuple[int, str]:
    """(tonic pitch class, mode) of a side-car: its 'tonic' and 'mode', else its 'key' ('c# minor')."""
    tonic, mode = labels.get('tonic'), labels.get('mode')
    if tonic is None or mode is None:
        tonic, _, mode = str(labels.get('key', '')).strip().partition(' ')
    if mode not in ('major', 'minor'):
        raise ValueError(f"labels need tonic + mode or key like 'c# minor', got {labels.get('key')!r}")
    return pitch_class(tonic), mode


def key_scores(chroma: np.ndarray) -> np.ndarray:
    """Pearson correlation of a 12-bin chroma vector with the 24 rotated KK profiles: [24] (12 major, 12 minor)."""
    profiles = [np.roll(p, t) for p in (KK_MAJOR, KK_MINOR) for t in range(12)]
    return np.array([np.corrcoef(chroma, p)[0, 1] for p in profiles])


def estimate_key(wav: tp.Any, sr: int) -> tp.Tuple[str, str]:
    """(tonic, mode) such as ('f#', 'major'): time-averaged constant-Q chroma of the harmonic part (HPSS
    drops the drums), best of the 24 KK profiles. Tonics are spelled as the synth labels spell them
    (c c# d eb e f f# g ab a bb b)."""
    librosa = load_librosa()
    y = librosa.effects.harmonic(analysis_mono(wav, sr))
    chroma = librosa.feature.chroma_cqt(y=y, sr=ANALYSIS_SR, hop_length=2048).mean(axis=1)
    if not np.any(chroma > 0) or np.ptp(chroma) == 0:
        return TONICS[0], 'major'  # silence: any key
    best = int(np.argmax(key_scores(chroma)))
    return TONICS[best % 12], 'major' if best < 12 else 'minor'


def weighted_key_score(estimated: tp.Tuple[tp.Any, str], reference: tp.Tuple[tp.Any, str],
                       allow_descending_fifths: bool = False) -> float:
    """MIREX / mir_eval.key weighted score of (tonic, mode) keys (tonic: name or pitch class): 1 same key,
    0.5 same mode a fifth above the reference (or below, if allowed), 0.3 relative, 0.2 parallel, else 0."""
    (est, est_mode), (ref, ref_mode) = estimated, reference
    est, ref = (pitch_class(k) if isinstance(k, str) else int(k) % 12 for k in (est, ref))
    step = (est - ref) % 12
    if est_mode == ref_mode:
        return 1.0 if step == 0 else 0.5 if step == 7 or (allow_descending_fifths and step == 5) else 0.0
    if (ref_mode == 'major' and step == 9) or (ref_mode == 'minor' and step == 3):
        return 0.3
    return 0.2 if step == 0 else 0.0


# --------------------------------------------------------------------------- instrument families

def clip_features(wav: tp.Any, sr: int) -> np.ndarray:
    """Level-invariant timbre statistics [212]: log-mel (64 bands, dB re the clip's peak) mean, std and mean
    |frame difference|; spectral contrast (7) mean and std; log flatness, zero-crossing rate and onset
    strength mean and std."""
    librosa = load_librosa()
    y = analysis_mono(wav, sr)
    y = y / max(float(np.abs(y).max()), 1e-8)
    spec = np.abs(librosa.stft(y, n_fft=2048, hop_length=512))
    logmel = librosa.power_to_db(librosa.feature.melspectrogram(S=spec ** 2, sr=ANALYSIS_SR, n_mels=64),
                                 ref=np.max, top_db=80.0)  # [64, frames]
    contrast = librosa.feature.spectral_contrast(S=spec, sr=ANALYSIS_SR)  # [7, frames]
    flatness = np.log(librosa.feature.spectral_flatness(S=spec) + 1e-10)[0]
    zcr = librosa.feature.zero_crossing_rate(y, hop_length=512)[0]
    onset = librosa.onset.onset_strength(S=logmel, sr=ANALYSIS_SR)
    stats = [logmel.mean(1), logmel.std(1), np.abs(np.diff(logmel, axis=1)).mean(1), contrast.mean(1),
             contrast.std(1)] + [np.array([v.mean(), v.std()]) for v in (flatness, zcr, onset)]
    return np.concatenate(stats).astype(np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


class FamilyClassifier:
    """Multi-label instrument-family detector: standardized `clip_features` -> a one-hidden-layer ReLU MLP with
    sigmoid outputs (default; l2 is its weight decay alpha) or, with hidden=0, one logistic regression per family
    (l2 is the inverse strength C). scikit-learn trains it; it is saved as plain arrays in an .npz (no pickle)
    and predicts with numpy only."""

    def __init__(self, families: tp.Sequence[str] = FAMILIES, hidden: int = 128, l2: float = 1.0, seed: int = 0):
        if len(set(families)) != len(families) or not families:
            raise ValueError(f"families must be distinct and non-empty, got {list(families)}")
        self.families, self.hidden, self.l2, self.seed = tuple(families), hidden, l2, seed
        self.mean: tp.Optional[np.ndarray] = None
        self.scale: tp.Optional[np.ndarray] = None
        self.layers: tp.List[tp.Tuple[np.ndarray, np.ndarray]] = []  # (W [in, out], b [out])

    def targets(self, labels: tp.Sequence[tp.Sequence[str]]) -> np.ndarray:
        """0/1 matrix [N, F] of label lists; unknown family names are an error."""
        unknown = sorted({f for names in labels for f in names} - set(self.families))
        if unknown:
            raise ValueError(f"unknown families {unknown}; the classifier knows {list(self.families)}")
        return np.array([[f in names for f in self.families] for names in labels], dtype=np.int64)

    def fit(self, paths: tp.Sequence[PathLike], labels: tp.Sequence[tp.Sequence[str]]) -> 'FamilyClassifier':
        """Train on audio files and their family lists."""
        return self.fit_features(np.stack([clip_features(*read_audio(p)) for p in paths]), labels)

    def fit_features(self, features: np.ndarray, labels: tp.Sequence[tp.Sequence[str]]) -> 'FamilyClassifier':
        """Train on a feature matrix [N, D] and N family lists."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.neural_network import MLPClassifier

        y = self.targets(labels)
        if len(features) != len(y):
            raise ValueError(f"got {len(features)} feature rows for {len(y)} label lists")
        if (y.min(0) == y.max(0)).any():
            constant = [f for f, c in zip(self.families, y.min(0) == y.max(0), strict=True) if c]
            raise ValueError(f"families {constant} are present in all or none of the clips; add varied clips")
        self.mean, self.scale = features.mean(0), features.std(0) + 1e-6
        x = (features - self.mean) / self.scale
        if self.hidden:
            mlp = MLPClassifier((self.hidden,), alpha=self.l2, max_iter=1000, random_state=self.seed).fit(x, y)
            self.layers = [(w.astype(np.float32), b.astype(np.float32))
                           for w, b in zip(mlp.coefs_, mlp.intercepts_, strict=True)]
        else:
            fits = [LogisticRegression(C=self.l2, max_iter=2000).fit(x, y[:, i]) for i in range(y.shape[1])]
            self.layers = [(np.stack([m.coef_[0] for m in fits], 1).astype(np.float32),
                            np.array([m.intercept_[0] for m in fits], dtype=np.float32))]
        return self

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Family probabilities [N, F] (columns in self.families order) of a feature matrix [N, D]."""
        self._check_trained()
        features = np.atleast_2d(features)
        if features.shape[-1] != len(self.mean):
            raise ValueError(f"expected {len(self.mean)} features per clip (clip_features), got {features.shape[-1]}")
        x = (features - self.mean) / self.scale
        for i, (w, b) in enumerate(self.layers):
            x = x @ w + b
            x = np.maximum(x, 0.0) if i < len(self.layers) - 1 else x
        return _sigmoid(x)

    def _check_trained(self) -> None:
        if not self.layers or self.mean is None:
            raise ValueError("the classifier is not trained; call fit() or FamilyClassifier.load(path)")

    def save(self, path: PathLike) -> None:
        """Write the arrays to an .npz, atomically."""
        self._check_trained()
        arrays = {f"w{i}": w for i, (w, _) in enumerate(self.layers)}
        arrays.update({f"b{i}": b for i, (_, b) in enumerate(self.layers)})
        config = {'families': list(self.families), 'hidden': self.hidden, 'l2': self.l2, 'seed': self.seed,
                  'layers': len(self.layers), 'features': 'clip_features v1', 'sample_rate': ANALYSIS_SR}
        with atomic_file(path) as tmp:
            with open(tmp, 'wb') as f:
                np.savez(f, config=np.array(json.dumps(config)), mean=self.mean, scale=self.scale, **arrays)

    @classmethod
    def load(cls, path: PathLike) -> 'FamilyClassifier':
        """Read a classifier written by save()."""
        if not Path(path).is_file():
            raise FileNotFoundError(f"no family classifier at {path}; train one: openmagnet eval train-classifier")
        with np.load(path, allow_pickle=False) as data:
            config = json.loads(str(data['config']))
            model = cls(config['families'], config['hidden'], config['l2'], config['seed'])
            model.mean, model.scale = data['mean'], data['scale']
            model.layers = [(data[f"w{i}"], data[f"b{i}"]) for i in range(config['layers'])]
        return model


def prompted_families(labels: tp.Mapping[str, tp.Any]) -> tp.List[str]:
    """The families whose instrument the description names (every part whose name it contains); the 'family'
    list when the labels have no parts or description."""
    text, parts = str(labels.get('description', '')).lower(), labels.get('parts') or []
    named = sorted({p['family'] for p in parts if p['name'].lower() in text})
    return named or list(labels.get('family', []))


def family_metrics(proba: np.ndarray, targets: np.ndarray, prompted: np.ndarray,
                   threshold: float = 0.5) -> tp.Dict[str, float]:
    """From probabilities [N, F], true families [N, F] and prompted families [N, F] (0/1): macro F1 and mAP
    over families with a positive, and the mean per-clip fraction of prompted families detected."""
    from sklearn.metrics import average_precision_score, f1_score

    detected = proba >= threshold
    present = targets.sum(0) > 0
    f1 = f1_score(targets[:, present], detected[:, present], average=None, zero_division=0)
    ap = [average_precision_score(targets[:, i], proba[:, i]) for i in np.flatnonzero(present)]
    asked = prompted.sum(1)
    rate = ((detected & prompted.astype(bool)).sum(1)[asked > 0] / asked[asked > 0]).mean()
    return {'family_detected': float(rate), 'family_f1': float(np.mean(f1)), 'family_map': float(np.mean(ap))}


# --------------------------------------------------------------------------- scoring audio against labels

@dataclasses.dataclass(frozen=True)
class Analysis:
    """What one clip's audio says: tempo, key and timbre features (scored against any labels later)."""
    bpm: float
    tonic: str
    mode: str
    features: np.ndarray


def read_audio(path: PathLike) -> tp.Tuple[np.ndarray, int]:
    """(mono float32 [T], sample rate) of an audio file."""
    wav, sr = audio_read(path)
    return wav.mean(0).numpy(), sr


def analyze(wav: tp.Any, sr: int) -> Analysis:
    y = analysis_mono(wav, sr)  # resample once for the three estimators
    return Analysis(estimate_tempo(y, ANALYSIS_SR), *estimate_key(y, ANALYSIS_SR), clip_features(y, ANALYSIS_SR))


def clip_scores(analyses: tp.Sequence[Analysis], labels: tp.Sequence[tp.Mapping[str, tp.Any]],
                classifier: tp.Optional[FamilyClassifier] = None) -> tp.Dict[str, np.ndarray]:
    """Per-clip scores against the prompts' labels (same order), whose means are `score`'s rates:
    tempo_acc1 / tempo_acc2 / key_exact / key_mode (0 or 1), key_weighted (MIREX weight) and, with a
    classifier, family_detected (the fraction of the prompted families detected; NaN when none is named)."""
    if len(analyses) != len(labels) or not labels:
        raise ValueError(f"need one labels dict per clip and at least one clip, got {len(analyses)} / {len(labels)}")
    bpm = [float(lab['bpm']) for lab in labels]
    keys = [label_key(lab) for lab in labels]
    pairs = list(zip(analyses, bpm, keys, strict=True))
    out = {'tempo_acc1': np.array([tempo_match(a.bpm, t, allow_octave=False) for a, t, _ in pairs], dtype=float),
           'tempo_acc2': np.array([tempo_match(a.bpm, t) for a, t, _ in pairs], dtype=float),
           'key_weighted': np.array([weighted_key_score((a.tonic, a.mode), k) for a, _, k in pairs])}
    out['key_exact'] = (out['key_weighted'] == 1.0).astype(float)
    out['key_mode'] = np.array([a.mode == k[1] for a, k in zip(analyses, keys, strict=True)], dtype=float)
    if classifier is not None:
        detected = classifier.predict_proba(np.stack([a.features for a in analyses])) >= 0.5
        prompted = classifier.targets([prompted_families(lab) for lab in labels]).astype(bool)
        asked = prompted.sum(1)
        with np.errstate(invalid='ignore', divide='ignore'):
            out['family_detected'] = np.where(asked > 0, (detected & prompted).sum(1) / asked, np.nan)
    return out


def score(analyses: tp.Sequence[Analysis], labels: tp.Sequence[tp.Mapping[str, tp.Any]],
          classifier: tp.Optional[FamilyClassifier] = None) -> tp.Dict[str, tp.Any]:
    """Adherence metrics of analysed clips against their prompts' labels (side-car dicts, same order), and
    under 'per_clip' the per-clip scores they average (`clip_scores`, for bootstrap intervals)."""
    per_clip = clip_scores(analyses, labels, classifier)
    bpm = np.array([float(lab['bpm']) for lab in labels])
    est = np.array([a.bpm for a in analyses])
    out: tp.Dict[str, tp.Any] = {'clips': len(labels),
                                 'tempo_acc1': float(per_clip['tempo_acc1'].mean()),
                                 'tempo_acc2': float(per_clip['tempo_acc2'].mean()),
                                 'tempo_median_abs_err': float(np.median(np.abs(est - bpm))),
                                 'key_exact': float(per_clip['key_exact'].mean()),
                                 'key_mode': float(per_clip['key_mode'].mean()),
                                 'key_weighted': float(per_clip['key_weighted'].mean())}
    if classifier is not None:
        proba = classifier.predict_proba(np.stack([a.features for a in analyses]))
        targets = classifier.targets([lab['family'] for lab in labels])
        prompted = classifier.targets([prompted_families(lab) for lab in labels])
        out.update(family_metrics(proba, targets, prompted))
    out['per_clip'] = {k: [None if np.isnan(v) else float(v) for v in values] for k, values in per_clip.items()}
    return out


MARGIN_METRICS = ('tempo_acc2', 'key_weighted', 'family_detected')


def bootstrap_margin(values: tp.Sequence[tp.Optional[float]], floor: tp.Sequence[tp.Optional[float]],
                     confidence: float = 0.95, resamples: int = 5000, seed: int = 0) -> tp.Dict[str, float]:
    """mean(values) - mean(floor), with the `confidence` percentile bootstrap interval of that difference
    (each set resampled independently with replacement; missing values dropped)."""
    a = np.array([v for v in values if v is not None and not np.isnan(v)], dtype=float)
    b = np.array([v for v in floor if v is not None and not np.isnan(v)], dtype=float)
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"a bootstrap interval needs at least 2 values on each side, got {len(a)} and {len(b)}")
    rng = np.random.default_rng(seed)
    diffs = (a[rng.integers(0, len(a), (resamples, len(a)))].mean(1)
             - b[rng.integers(0, len(b), (resamples, len(b)))].mean(1))
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(diffs, [tail, 100 - tail])
    return {'margin': float(a.mean() - b.mean()), 'low': float(low), 'high': float(high)}


def margins(generated: tp.Mapping[str, tp.Any], floor: tp.Mapping[str, tp.Any], seed: int = 0) -> tp.Dict[str, dict]:
    """Generated minus floor for the rates that matter (tempo acc2, key MIREX, prompted family detected), each
    with its 95 % bootstrap interval: the model follows the text where the interval lies above 0."""
    return {k: bootstrap_margin(generated['per_clip'][k], floor['per_clip'][k], seed=seed)
            for k in MARGIN_METRICS if k in generated['per_clip'] and k in floor['per_clip']}


def evaluate_adherence(items: tp.Iterable[tp.Tuple[tp.Any, int, tp.Mapping[str, tp.Any]]],
                       classifier: tp.Optional[FamilyClassifier] = None) -> tp.Dict[str, float]:
    """Metrics of (wav [T] or [C, T], sample rate, labels) items: tempo acc1 / acc2 / median |bpm error|, key
    exact / mode / weighted and, with a classifier, family detection rate, macro F1 and mAP."""
    items = list(items)
    return score([analyze(w, sr) for w, sr, _ in items], [labels for _, _, labels in items], classifier)


def load_labels(folder: PathLike) -> tp.List[tp.Tuple[Path, dict]]:
    """(audio path, side-car dict) of every clip in a synth folder (FOLDER/audio/*.json, or FOLDER/*.json)."""
    folder = Path(folder)
    audio = folder / 'audio' if (folder / 'audio').is_dir() else folder
    sidecars = sorted(audio.glob('*.json'))
    if not sidecars:
        raise ValueError(f"no side-car .json labels in {audio}; pass a folder written by `openmagnet data synth`")
    return [(p.with_suffix('.wav'), json.loads(p.read_text(encoding='utf-8'))) for p in sidecars]


def _analyze_files(paths: tp.Sequence[PathLike], progress: bool) -> tp.List[Analysis]:
    from tqdm import tqdm

    return [analyze(*read_audio(p)) for p in tqdm(paths, desc='analysing', unit='clip', disable=not progress)]


def derangement(n: int, seed: int) -> np.ndarray:
    """A seeded permutation with no fixed point (n >= 2): clip i takes the labels of clip out[i] != i."""
    if n < 2:
        raise ValueError(f"shuffling prompts needs at least 2 clips, got {n}")
    order = np.random.default_rng(seed).permutation(n)
    out = np.empty(n, dtype=np.int64)
    out[order] = np.roll(order, -1)  # one cycle through the shuffled order
    return out


def reference_rows(folder: PathLike, classifier: tp.Optional[FamilyClassifier] = None, seed: int = 0,
                   progress: bool = False) -> tp.Dict[str, tp.Dict[str, float]]:
    """The ceiling (rendered clips against their own labels) and floor (the same audio against another clip's
    labels, seeded derangement) rows of a synth folder such as synth/holdout."""
    clips = load_labels(folder)
    analyses = _analyze_files([p for p, _ in clips], progress)
    labels = [lab for _, lab in clips]
    shuffled = [labels[j] for j in derangement(len(labels), seed)]
    return {'real rendered clips (ceiling)': score(analyses, labels, classifier),
            'shuffled prompts (floor)': score(analyses, shuffled, classifier)}


def score_generated(audio_dir: PathLike, labels_folder: PathLike, classifier: tp.Optional[FamilyClassifier] = None,
                    progress: bool = False) -> tp.Dict[str, float]:
    """Generated audio against its prompts' labels: AUDIO_DIR/clip_000123.wav (or .flac / .ogg / .mp3) was
    generated from the description of LABELS/audio/clip_000123.json. Prompts without audio are skipped."""
    found = []
    for path, labels in load_labels(labels_folder):
        candidates = [Path(audio_dir) / f"{path.stem}{ext}" for ext in ('.wav', '.flac', '.ogg', '.mp3')]
        found += [(c, labels) for c in candidates if c.is_file()][:1]
    if not found:
        raise ValueError(f"no generated audio in {audio_dir} named like the labels (e.g. clip_000000.wav)")
    return score(_analyze_files([p for p, _ in found], progress), [lab for _, lab in found], classifier)


COLUMNS = (('clips', 'clips', '{:.0f}'), ('tempo_acc1', 'tempo acc1', '{:.2f}'), ('tempo_acc2', 'tempo acc2', '{:.2f}'),
           ('tempo_median_abs_err', 'median abs bpm err', '{:.1f}'), ('key_exact', 'key exact', '{:.2f}'),
           ('key_mode', 'mode', '{:.2f}'), ('key_weighted', 'key MIREX', '{:.2f}'),
           ('family_detected', 'prompted family detected', '{:.2f}'), ('family_f1', 'family F1', '{:.2f}'),
           ('family_map', 'family mAP', '{:.2f}'))


def margins_table(rows: tp.Mapping[str, dict]) -> str:
    """`margins` as markdown: one row per metric, the margin and its 95 % bootstrap interval."""
    titles = {key: title for key, title, _ in COLUMNS}
    lines = ['| generated - floor | margin | 95 % bootstrap interval |', '|---|---|---|']
    lines += [f"| {titles[k]} | {m['margin']:+.2f} | [{m['low']:+.2f}, {m['high']:+.2f}] |" for k, m in rows.items()]
    return '\n'.join(lines)


def markdown_table(rows: tp.Mapping[str, tp.Mapping[str, float]]) -> str:
    """A markdown table with one row per named metrics dict (missing metrics shown as -)."""
    head = '| audio | ' + ' | '.join(title for _, title, _ in COLUMNS) + ' |'
    lines = [head, '|' + '---|' * (len(COLUMNS) + 1)]
    for name, metrics in rows.items():
        cells = [fmt.format(metrics[key]) if key in metrics else '-' for key, _, fmt in COLUMNS]
        lines.append(f"| {name} | " + ' | '.join(cells) + ' |')
    return '\n'.join(lines)
