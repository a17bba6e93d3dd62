"""Procedural, captioned music for training without released weights (`openmagnet data synth`, issue 6).

Each clip is drawn from `random.Random(f"{seed}:{index}")` (holdout clips from `f"{seed}:holdout:{index}"`):
a style template (genre, tempo range, instrument slots, drum groove), a key and mode, 1-4 General MIDI
instruments playing melody / chords / arpeggio / bass / drums, and dynamics. The notes are composed with
pretty_midi, rendered with FluidSynth and a General MIDI SoundFont, and written as
`DIR/audio/clip_000123.wav` + `clip_000123.json` (the music side-car of SPEC §4.3 plus exact labels:
tonic, mode, family, parts...). `DIR/data.jsonl` indexes the audio. Everything depends only on
(seed, index, clip seconds, sample rate, SoundFont), never on --hours or --workers.

    specs = [sample_spec(seed=0, index=i) for i in range(3)]   # no rendering: labels + description only
    synthesize_dataset('synth/', hours=1.0, seed=0, workers=2, holdout=50)

pretty_midi and fluidsynth are imported inside the functions that render.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import subprocess
import tempfile
import time
import typing as tp
from pathlib import Path

from ..audio import audio_write
from ..files import atomic_file, atomic_write_text
from .compose import VERSION, clip_info, clip_name, compose, sample_spec
from .manifest import index_audio_dir

PathLike = tp.Union[str, os.PathLike]

SOUNDFONTS = ('/usr/share/sounds/sf2/FluidR3_GM.sf2', '/usr/share/soundfonts/FluidR3_GM.sf2',
              '/usr/share/sounds/sf2/default-GM.sf2', '/usr/share/soundfonts/default.sf2')
RENDERERS = ('auto', 'pyfluidsynth', 'cli')
GAIN = 0.5  # FluidSynth master gain; at 0.25 the loudest of 60 sample clips peaked at 0.32 (no int16 clipping)
_INSTALL = "install it with `apt-get install fluidsynth fluid-soundfont-gm` and `pip install 'openmagnet[synth]'`"

def find_soundfont(path: tp.Optional[PathLike] = None) -> Path:
    """The SoundFont to render with: path, else $OPENMAGNET_SOUNDFONT, else the Debian General MIDI ones."""
    candidates = [path] if path is not None else [os.environ.get('OPENMAGNET_SOUNDFONT'), *SOUNDFONTS]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate).resolve()
    if path is not None:
        raise ValueError(f"SoundFont {path} does not exist; pass an existing .sf2 file")
    raise ValueError(f"no General MIDI SoundFont found (looked at {', '.join(SOUNDFONTS)}); {_INSTALL}")


def find_renderer(renderer: str = 'auto') -> str:
    """'pyfluidsynth' (in-process, preferred) or 'cli' (the fluidsynth program); ValueError if neither works."""
    if renderer not in RENDERERS:
        raise ValueError(f"renderer must be one of {', '.join(RENDERERS)}, got {renderer!r}")
    if renderer in ('auto', 'pyfluidsynth'):
        try:
            import fluidsynth  # noqa: F401  (raises ImportError when libfluidsynth is missing)
            return 'pyfluidsynth'
        except (ImportError, OSError) as err:
            if renderer == 'pyfluidsynth':
                raise ValueError(f"pyfluidsynth cannot be used ({err}); {_INSTALL}") from None
    if shutil.which('fluidsynth'):
        return 'cli'
    raise ValueError(f"no FluidSynth renderer: neither pyfluidsynth nor the fluidsynth program works; {_INSTALL}")


def _events(midi) -> tp.List[tp.Tuple[float, int, int, int, int]]:
    """(time s, 0 = off / 1 = on, channel, pitch, velocity) of every note, sorted; drums on channel 9."""
    events, channel = [], 0
    for instrument in midi.instruments:
        ch = 9 if instrument.is_drum else channel
        channel += 0 if instrument.is_drum else 1
        for note in instrument.notes:
            events += [(note.start, 1, ch, note.pitch, note.velocity), (note.end, 0, ch, note.pitch, 0)]
    return sorted(events)


def _render_pyfluidsynth(midi, seconds: float, sample_rate: int, soundfont: Path):
    """Float32 stereo [T, 2] from a fresh in-process synth (fresh, so no state leaks between clips)."""
    import fluidsynth
    import numpy as np

    synth = fluidsynth.Synth(gain=GAIN, samplerate=float(sample_rate))
    try:
        sfid = synth.sfload(str(soundfont))
        if sfid < 0:
            raise ValueError(f"FluidSynth cannot load the SoundFont {soundfont}; pass a valid .sf2 file")
        channel = 0
        for instrument in midi.instruments:
            ch = 9 if instrument.is_drum else channel
            channel += 0 if instrument.is_drum else 1
            synth.program_select(ch, sfid, 128 if instrument.is_drum else 0, instrument.program)
        total, position, chunks = round(seconds * sample_rate), 0, []
        for time_s, on, ch, pitch, velocity in _events(midi):
            at = min(total, round(time_s * sample_rate))
            if at > position:
                chunks.append(synth.get_samples(at - position))
                position = at
            if position >= total:
                break
            synth.noteon(ch, pitch, velocity) if on else synth.noteoff(ch, pitch)
        if position < total:
            chunks.append(synth.get_samples(total - position))
    finally:
        synth.delete()
    return np.concatenate(chunks).astype(np.float32).reshape(-1, 2) / 32768


def _render_cli(midi, seconds: float, sample_rate: int, soundfont: Path):
    """Float32 stereo [T, 2] from the fluidsynth program, cut or padded to the clip length."""
    import numpy as np
    import soundfile

    with tempfile.TemporaryDirectory() as tmp:
        mid, wav = Path(tmp) / 'clip.mid', Path(tmp) / 'clip.wav'
        midi.write(str(mid))
        command = ['fluidsynth', '-ni', '-q', '-g', str(GAIN), '-r', str(sample_rate), '-T', 'wav', '-O', 's16',
                   '-F', str(wav), str(soundfont), str(mid)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if done.returncode != 0 or not wav.is_file():
            raise ValueError(f"fluidsynth failed ({done.stderr.strip()[-300:]}); check the SoundFont and install")
        data, _ = soundfile.read(str(wav), dtype='float32', always_2d=True)
    total = round(seconds * sample_rate)
    return np.pad(data[:total], ((0, max(0, total - len(data))), (0, 0)))


def render(midi, seconds: float, sample_rate: int, soundfont: PathLike, renderer: str = 'auto'):
    """Mono float32 audio [T] of exactly round(seconds * sample_rate) samples, with a 30 ms fade-out."""
    import numpy as np

    kind, soundfont = find_renderer(renderer), Path(soundfont)
    stereo = (_render_pyfluidsynth if kind == 'pyfluidsynth' else _render_cli)(midi, seconds, sample_rate, soundfont)
    mono = stereo.mean(axis=1)
    fade = min(len(mono), int(0.03 * sample_rate))
    mono[len(mono) - fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    return mono


# --------------------------------------------------------------------------- the dataset

@dataclasses.dataclass(frozen=True)
class _Job:
    """One clip to write (picklable, for the worker processes)."""
    folder: str
    seed: int
    index: int
    stream: str
    clip_seconds: tp.Tuple[float, float]
    sample_rate: int
    soundfont: str
    renderer: str
    tempo: str = 'style'
    drums: str = 'style'


@dataclasses.dataclass(frozen=True)
class SynthResult:
    """What `synthesize_dataset` did: clips per stream, how many were rendered now, seconds of audio, manifests."""
    out: Path
    clips: int
    holdout: int
    rendered: int
    seconds: float
    holdout_seconds: float
    manifest: Path
    holdout_manifest: tp.Optional[Path]


def write_clip(job: _Job) -> tp.Tuple[bool, float]:
    """Render one clip into job.folder/audio (wav, then MIDI, then the JSON that marks it complete);
    returns (rendered now, seconds). A clip whose wav and JSON both exist is skipped."""
    import torch

    spec = sample_spec(job.seed, job.index, job.clip_seconds, job.stream, job.tempo, job.drums)
    audio_dir, name = Path(job.folder) / 'audio', clip_name(job.index)
    wav_path, json_path = audio_dir / f"{name}.wav", audio_dir / f"{name}.json"
    if wav_path.is_file() and json_path.is_file():
        return False, spec.seconds
    midi = compose(spec)
    audio = render(midi, spec.seconds, job.sample_rate, job.soundfont, job.renderer)
    if not audio.any():
        raise ValueError(f"clip {job.stream} {job.index} rendered silent; check the SoundFont {job.soundfont}")
    audio_write(wav_path, torch.from_numpy(audio)[None], job.sample_rate, strategy='peak',
                peak_clip_headroom_db=1.0, add_suffix=False, log_clipping=False)
    with atomic_file(Path(job.folder) / 'midi' / f"{name}.mid") as tmp:
        midi.write(str(tmp))
    atomic_write_text(json.dumps(clip_info(spec, job.sample_rate), indent=1) + '\n', json_path)
    return True, spec.seconds


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)


def _context():
    """forkserver with this module preloaded (one torch import, then cheap clean forks); spawn where missing."""
    import multiprocessing

    if 'forkserver' not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context('spawn')
    context = multiprocessing.get_context('forkserver')
    context.set_forkserver_preload([__name__])
    return context


def _run_jobs(jobs: tp.Sequence[_Job], workers: int, progress: bool) -> tp.List[tp.Tuple[bool, float]]:
    """Write every clip, in `workers` spawned processes (the result does not depend on the count)."""
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), unit='clip', desc='synth', disable=not progress)
    results = []
    try:
        if workers == 1 or len(jobs) <= 1:
            for job in jobs:
                results.append(write_clip(job))
                bar.update()
        else:
            with _context().Pool(workers, initializer=_worker_init) as pool:
                for result in pool.imap(write_clip, jobs):  # in job order
                    results.append(result)
                    bar.update()
    finally:
        bar.close()
    return results


def _soundfont_sha256(path: Path) -> str:
    """sha256 of the SoundFont's first MiB (enough to tell SoundFonts apart, fast on 150 MB files)."""
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read(1 << 20)).hexdigest()


def _check_settings(record: Path, settings: dict) -> None:
    """On a resumed run, insist that everything that shapes the audio matches the earlier run; a run that rendered
    no clip (it stopped at once, e.g. without the synth extra) binds nothing."""
    if not record.is_file() or not any(record.parent.glob('audio/clip_*.wav')) and \
            not any(record.parent.glob('holdout/audio/clip_*.wav')):
        return
    try:
        old = json.loads(record.read_text(encoding='utf-8'))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError(f"{record} is not valid JSON; delete it or choose another --out") from None
    defaults = {'tempo': 'style', 'drums': 'style'}  # settings recorded only when not the default
    now = {**defaults, **settings}
    before = {k: old.get(k, defaults.get(k)) for k in now}
    changed = [k for k in now if before[k] != now[k]]
    if changed:
        diff = ', '.join(f"{k}: {before[k]!r} -> {now[k]!r}" for k in changed)
        raise ValueError(f"{record.parent} was synthesised with other settings ({diff}); "
                         "use the same settings to resume, or another --out")


def check_synth_extra() -> None:
    """The Python half of the `synth` extra (pretty_midi composes the clips), before anything is written."""
    try:
        import pretty_midi  # noqa: F401
    except ImportError:
        raise ValueError("data synth needs the synth extra: pip install 'openmagnet[synth]' (pretty_midi, "
                         "pyfluidsynth), and FluidSynth with a General MIDI SoundFont (apt-get install fluidsynth "
                         "fluid-soundfont-gm)") from None


def _validate(hours: float, workers: int, holdout: int, sample_rate: int) -> None:
    if not hours > 0:
        raise ValueError(f"--hours must be > 0, got {hours}")
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    if holdout < 0:
        raise ValueError(f"--holdout must be >= 0, got {holdout}")
    if not 8000 <= sample_rate <= 96000:
        raise ValueError(f"--sample-rate must be within 8000..96000 Hz (FluidSynth's range), got {sample_rate}")


def synthesize_dataset(out_dir: PathLike, hours: float, seed: int, *, sample_rate: int = 32000,
                       clip_seconds: tp.Tuple[float, float] = (10.0, 12.0), workers: int = 1, holdout: int = 0,
                       soundfont: tp.Optional[PathLike] = None, renderer: str = 'auto', tempo: str = 'style',
                       drums: str = 'style', progress: bool = True) -> SynthResult:
    """Write ceil(hours * 3600 / mean clip seconds) clips to out_dir/audio and index them into out_dir/data.jsonl;
    holdout clips (their own seed stream) go to out_dir/holdout/{audio,data.jsonl}. Finished clips are kept,
    so an interrupted run resumes; out_dir/synth.json records the settings and the counts. tempo and drums:
    see `compose.sample_spec`."""
    _validate(hours, workers, holdout, sample_rate)
    check_synth_extra()
    clip_seconds = (float(clip_seconds[0]), float(clip_seconds[-1]))
    sample_spec(seed, 0, clip_seconds, tempo=tempo, drums=drums)  # validates clip_seconds, tempo and drums
    font, kind, out = find_soundfont(soundfont), find_renderer(renderer), Path(out_dir)
    clips = math.ceil(round(hours * 3600 / (sum(clip_seconds) / 2), 6))  # 0.016667 h of 10 s clips: 6
    settings = {'version': VERSION, 'seed': seed, 'sample_rate': sample_rate, 'clip_seconds': list(clip_seconds),
                'renderer': kind, 'soundfont_sha256_1mb': _soundfont_sha256(font)}
    if tempo != 'style':  # recorded only when not the default, so that older datasets still resume
        settings['tempo'] = tempo
    if drums != 'style':
        settings['drums'] = drums
    record = out / 'synth.json'
    _check_settings(record, settings)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps({**settings, 'soundfont': str(font), 'complete': False}, indent=1) + '\n', record)
    jobs = [_Job(str(out), seed, i, 'train', clip_seconds, sample_rate, str(font), kind, tempo, drums)
            for i in range(clips)]
    jobs += [_Job(str(out / 'holdout'), seed, i, 'holdout', clip_seconds, sample_rate, str(font), kind,
                  tempo, drums) for i in range(holdout)]
    started = time.time()
    results = _run_jobs(jobs, workers, progress)
    manifest = index_audio_dir(out / 'audio', out).path
    held = index_audio_dir(out / 'holdout' / 'audio', out / 'holdout').path if holdout else None
    seconds = sum(s for (_, s), job in zip(results, jobs, strict=True) if job.stream == 'train')
    result = SynthResult(out, clips, holdout, sum(r for r, _ in results), seconds,
                         sum(s for _, s in results) - seconds, manifest, held)
    summary = {**settings, 'soundfont': str(font), 'hours': hours, 'clips': clips, 'holdout': holdout,
               'seconds': round(seconds, 2), 'holdout_seconds': round(result.holdout_seconds, 2),
               'rendered_last_run': result.rendered, 'workers': workers,
               'elapsed_last_run_s': round(time.time() - started, 1), 'complete': True}
    atomic_write_text(json.dumps(summary, indent=1) + '\n', record)
    return result
