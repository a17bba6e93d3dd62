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
import random
import shutil
import subprocess
import tempfile
import time
import typing as tp
from pathlib import Path

from ..files import atomic_file, atomic_write_text

PathLike = tp.Union[str, os.PathLike]

VERSION = 1  # bump when the same (seed, index) would give different music
SOUNDFONTS = ('/usr/share/sounds/sf2/FluidR3_GM.sf2', '/usr/share/soundfonts/FluidR3_GM.sf2',
              '/usr/share/sounds/sf2/default-GM.sf2', '/usr/share/soundfonts/default.sf2')
RENDERERS = ('auto', 'pyfluidsynth', 'cli')
GAIN = 0.5  # FluidSynth master gain; at 0.25 the loudest of 60 sample clips peaked at 0.32 (no int16 clipping)
_INSTALL = "install it with `apt-get install fluidsynth fluid-soundfont-gm` and `pip install 'openmagnet[synth]'`"

TONICS = ('c', 'c#', 'd', 'eb', 'e', 'f', 'f#', 'g', 'ab', 'a', 'bb', 'b')
SCALES = {'major': (0, 2, 4, 5, 7, 9, 11), 'minor': (0, 2, 3, 5, 7, 8, 10)}
PROGRESSIONS = {  # scale degrees, 0-based: I-V-vi-IV, i-VI-III-VII, ...
    'major': ((0, 4, 5, 3), (0, 3, 4, 3), (5, 3, 0, 4), (0, 5, 3, 4), (1, 4, 0, 0), (0, 3, 0, 4)),
    'minor': ((0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 6), (0, 3, 6, 2), (0, 5, 3, 4)),
}
# General MIDI families -> (program, name); drums are bank-128 kits on channel 10.
INSTRUMENTS = {
    'piano': ((0, 'piano'), (1, 'bright piano'), (4, 'electric piano'), (7, 'clavinet')),
    'organ': ((16, 'hammond organ'), (17, 'percussive organ'), (19, 'church organ')),
    'guitar': ((24, 'nylon guitar'), (25, 'acoustic guitar'), (27, 'clean electric guitar'),
               (29, 'overdriven guitar'), (30, 'distorted guitar')),
    'bass': ((32, 'upright bass'), (33, 'electric bass'), (34, 'picked bass'), (36, 'slap bass'),
             (38, 'synth bass')),
    'strings': ((40, 'violin'), (42, 'cello'), (45, 'pizzicato strings'), (48, 'string ensemble')),
    'brass': ((56, 'trumpet'), (57, 'trombone'), (58, 'tuba'), (60, 'french horn'), (61, 'brass section')),
    'reeds': ((65, 'alto sax'), (66, 'tenor sax'), (68, 'oboe'), (71, 'clarinet'), (21, 'accordion'),
              (22, 'harmonica')),  # GM files accordion and harmonica under organ; acoustically they are reeds
    'synth lead': ((80, 'square wave synth'), (81, 'sawtooth synth'), (84, 'lead synth')),
    'synth pad': ((88, 'new age pad'), (89, 'warm synth pad'), (90, 'polysynth pad'), (91, 'choir pad')),
    'drums': ((0, 'drums'), (8, 'drums'), (16, 'rock drums'), (24, 'electronic drums'), (25, '808 drums'),
              (32, 'jazz drums'), (40, 'brushed drums'), (48, 'orchestral percussion')),
}
FAMILIES = tuple(INSTRUMENTS)
_LOW_PROGRAMS = {42, 57, 58, 66}  # melodies an octave lower
_DRUM_NOTES = {'k': 36, 's': 38, 'r': 37, 'c': 39, 'h': 42, 'o': 46, 'p': 44, 'y': 51, 'x': 49}


@dataclasses.dataclass(frozen=True)
class Style:
    """A genre template: tempo range, P(major), instrument slots ('family' or 'family:prog,prog'),
    comp / bass pattern names, drum kits and groove (16 steps per bar, one string per drum letter)."""
    genre: str
    nouns: tp.Tuple[str, ...]
    bpm: tp.Tuple[int, int]
    major_p: float
    lead: tp.Tuple[str, ...]
    comp: tp.Tuple[str, ...]
    bass: tp.Tuple[str, ...]
    kits: tp.Tuple[int, ...]  # () = no drums
    groove: tp.Mapping[str, str]
    comp_patterns: tp.Tuple[str, ...]
    bass_patterns: tp.Tuple[str, ...]
    density: str = 'medium'
    swing: float = 0.0  # delay of off-beat eighths, in beats
    mood: str = ''
    sevenths: bool = False


_BACKBEAT = {'k': 'x.......x.x.....', 's': '....x.......x...', 'h': 'x.x.x.x.x.x.x.x.'}
STYLES = {s.genre: s for s in (
    Style('pop', ('track', 'tune', 'song'), (90, 128), 0.75, ('piano', 'synth lead', 'guitar:27', 'reeds:65'),
          ('piano', 'guitar:25,27', 'synth pad'), ('bass:33,34,38',), (0, 8), _BACKBEAT,
          ('stabs', 'halves', 'arpeggio'), ('root_fifth', 'eighths', 'halves'), mood='catchy'),
    Style('rock', ('track', 'anthem', 'jam'), (100, 160), 0.6, ('guitar:29,30', 'organ:16'),
          ('guitar:29,30', 'organ:16', 'piano:0'), ('bass:33,34',), (16, 0),
          {'k': 'x.....x.x.......', 's': '....x.......x...', 'h': 'x.x.x.x.x.x.x.x.'}, ('eighths', 'stabs'),
          ('eighths', 'root_fifth'), mood='energetic'),
    Style('ballad', ('ballad', 'piece'), (60, 84), 0.5, ('piano:0,4', 'strings:40,42', 'reeds:65,71'),
          ('piano:0,4', 'strings:48', 'synth pad:89'), ('bass:32,33',), (40, 0),
          {'k': 'x.........x.....', 'r': '....x.......x...', 'h': 'x...x...x...x...'},
          ('sustain', 'arpeggio', 'halves'), ('whole', 'halves'), density='sparse', mood='tender'),
    Style('funk', ('groove', 'jam', 'track'), (92, 118), 0.55, ('brass:56,61', 'piano:7', 'guitar:27'),
          ('organ:16', 'guitar:27', 'piano:7', 'brass:61'), ('bass:36,33',), (0, 8),
          {'k': 'x..x..x...x..x..', 's': '....x..x.x..x...', 'h': 'xxxxxxxxxxxxxxxx'}, ('funk', 'offbeat'),
          ('funk',), density='busy', mood='groovy'),
    Style('jazz', ('tune', 'piece', 'number'), (70, 170), 0.6, ('reeds:65,66', 'brass:56,57', 'piano:0'),
          ('piano:0,4', 'guitar:27', 'organ:16'), ('bass:32',), (32, 40),
          {'y': 'x...x.x.x...x.x.', 'k': 'x...............', 'p': '....x.......x...'}, ('comping', 'halves'),
          ('walking',), swing=0.16, mood='smooth', sevenths=True),
    Style('electronic', ('track', 'tune', 'loop'), (118, 140), 0.5, ('synth lead',),
          ('synth pad', 'synth lead:81'), ('bass:38',), (24, 25),
          {'k': 'x...x...x...x...', 'c': '....x.......x...', 'h': 'x.x.x.x.x.x.x.x.', 'o': '..x...x...x...x.'},
          ('arpeggio', 'sustain', 'offbeat'), ('offbeat', 'eighths'), mood='hypnotic'),
    Style('ambient', ('piece', 'soundscape', 'track'), (60, 90), 0.5, ('synth pad', 'strings:48', 'piano:0,4'),
          ('synth pad', 'strings:48', 'organ:19', 'piano:4'), ('bass:32,38',), (),
          {}, ('sustain', 'arpeggio'), ('whole',), density='sparse', mood='dreamy'),
    Style('classical', ('piece', 'composition', 'movement'), (60, 150), 0.6,
          ('strings:40', 'reeds:68,71', 'piano:0', 'brass:60'), ('strings:48', 'piano:0', 'organ:19'),
          ('strings:42', 'bass:32'), (), {}, ('arpeggio', 'sustain', 'halves'), ('halves', 'whole'),
          mood='elegant'),
    Style('folk', ('tune', 'song', 'piece'), (80, 130), 0.7, ('strings:40', 'guitar:24,25', 'reeds:21,22'),
          ('guitar:24,25', 'reeds:21', 'piano:0'), ('bass:32',), (40, 8),
          {'k': 'x.......x.......', 'r': '....x.......x...', 'h': 'x.x.x.x.x.x.x.x.'}, ('strum', 'arpeggio'),
          ('root_fifth',), mood='rustic'),
    Style('hip hop', ('beat', 'instrumental', 'track'), (80, 100), 0.4, ('piano:0,4', 'synth lead', 'brass:56'),
          ('piano:4', 'synth pad', 'organ:16', 'strings:48'), ('bass:38,33',), (25, 0),
          {'k': 'x......x..x.....', 's': '....x.......x...', 'h': 'x.x.x.x.x.x.x.x.'}, ('halves', 'stabs'),
          ('hiphop',), swing=0.08, mood='laid-back'),
    Style('blues', ('shuffle', 'tune', 'jam'), (70, 120), 0.7, ('guitar:27,29', 'organ:16', 'reeds:66,22'),
          ('organ:16', 'piano:0', 'guitar:27'), ('bass:33,32',), (0, 32),
          {'k': 'x.......x.......', 's': '....x.......x...', 'h': 'x.x.x.x.x.x.x.x.'}, ('stabs', 'comping'),
          ('walking', 'root_fifth'), swing=0.16, mood='soulful', sevenths=True),
    Style('march', ('march', 'fanfare'), (100, 124), 0.85, ('brass:56,60,61',), ('brass:61,57', 'reeds:71'),
          ('brass:58',), (48, 0), {'k': 'x.......x.......', 's': 'x.xxx.x.x.xxx.x.', 'x': 'x...............'},
          ('stabs', 'halves'), ('root_fifth',), mood='triumphant'),
)}
COMP = {  # (start step, length in steps) per bar
    'sustain': ((0, 16),), 'halves': ((0, 8), (8, 8)), 'stabs': ((0, 2), (4, 2), (8, 2), (12, 2)),
    'offbeat': ((2, 2), (6, 2), (10, 2), (14, 2)), 'eighths': tuple((i, 2) for i in range(0, 16, 2)),
    'funk': ((0, 1), (3, 1), (6, 2), (10, 1), (12, 2)), 'comping': ((0, 3), (6, 2), (10, 3)),
    'strum': ((0, 4), (4, 2), (6, 2), (8, 4), (12, 2), (14, 2)),
}
BASS = {  # (start step, length, tone): R root, 3 third, 5 fifth, O octave, A approach to the next root
    'whole': ((0, 16, 'R'),), 'halves': ((0, 8, 'R'), (8, 8, '5')),
    'eighths': tuple((i, 2, 'R') for i in range(0, 16, 2)), 'root_fifth': ((0, 4, 'R'), (4, 4, '5'), (8, 4, 'R'),
                                                                          (12, 4, '5')),
    'walking': ((0, 4, 'R'), (4, 4, '3'), (8, 4, '5'), (12, 4, 'A')), 'offbeat': ((2, 2, 'R'), (6, 2, 'R'),
                                                                                  (10, 2, 'R'), (14, 2, 'R')),
    'funk': ((0, 2, 'R'), (3, 1, 'O'), (6, 2, 'R'), (10, 1, '5'), (11, 1, 'O'), (14, 2, 'A')),
    'hiphop': ((0, 6, 'R'), (7, 2, 'R'), (10, 4, '5')),
}
CELLS = {  # melody rhythms in beats per bar
    'sparse': ((4,), (2, 2), (3, 1), (2, 1, 1), (1, 1, 2)),
    'medium': ((1, 1, 1, 1), (2, 1, 1), (1.5, 0.5, 2), (1, 0.5, 0.5, 2), (0.5, 0.5, 1, 1, 1)),
    'busy': ((0.5,) * 8, (1, 0.5, 0.5, 1, 0.5, 0.5), (0.75, 0.75, 0.5, 1, 1), (0.5, 0.5, 0.5, 0.5, 2)),
}
DYNAMICS = ('soft', 'medium', 'loud', 'crescendo', 'decrescendo')


# --------------------------------------------------------------------------- the clip spec

@dataclasses.dataclass(frozen=True)
class Part:
    """One MIDI instrument: its roles (melody, chords, arpeggio, bass, drums), family, GM program and name."""
    roles: tp.Tuple[str, ...]
    family: str
    program: int
    name: str


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    """Everything about one clip; the notes follow from it (`compose`). parts[0] is the main instrument."""
    seed: int
    index: int
    stream: str
    style: str
    bpm: int
    tonic: int
    mode: str
    progression: tp.Tuple[int, ...]
    parts: tp.Tuple[Part, ...]
    comp_pattern: str
    bass_pattern: str
    dynamics: str
    moods: tp.Tuple[str, ...]
    seconds: float
    description: str

    @property
    def key(self) -> str:
        return f"{TONICS[self.tonic]} {self.mode}"

    @property
    def families(self) -> tp.List[str]:
        return sorted({p.family for p in self.parts})

    @property
    def tempo_feel(self) -> str:
        return 'slow' if self.bpm < 76 else 'moderate' if self.bpm < 108 else 'fast' if self.bpm < 140 else 'very fast'


def _rng(seed: int, index: int, stream: str, what: str = '') -> random.Random:
    """The random stream of one clip: `f"{seed}:{index}"` for training clips, `f"{seed}:{stream}:{index}"` else."""
    base = f"{seed}:{index}" if stream == 'train' else f"{seed}:{stream}:{index}"
    return random.Random(base + (f":{what}" if what else ''))


def _instrument(rng: random.Random, slots: tp.Sequence[str]) -> tp.Tuple[str, int, str]:
    """(family, program, name) from slots like 'guitar' (any program) or 'guitar:29,30'."""
    family, _, programs = rng.choice(list(slots)).partition(':')
    allowed = {int(p) for p in programs.split(',')} if programs else None
    program, name = rng.choice([i for i in INSTRUMENTS[family] if allowed is None or i[0] in allowed])
    return family, program, name


def _parts(rng: random.Random, style: Style, comp_role: str) -> tp.Tuple[Part, ...]:
    """1-4 parts: the lead (melody), then a random subset of the drums / bass / comp (chords or arpeggio) slots."""
    family, program, name = _instrument(rng, style.lead)
    count = rng.randint(1, 4)
    polyphonic = family in ('piano', 'organ', 'guitar', 'synth pad', 'strings') and program not in (40, 42)
    solo_roles = ('melody', comp_role) if polyphonic else ('melody',)
    parts = [Part(solo_roles if count == 1 else ('melody',), family, program, name)]
    extras = ['bass', 'comp'] + (['drums'] if style.kits else [])
    for role in sorted(rng.sample(extras, min(count - 1, len(extras))), key=extras.index):
        if role == 'drums':
            kit = rng.choice(style.kits)
            parts.append(Part(('drums',), 'drums', kit, dict(INSTRUMENTS['drums'])[kit]))
        else:
            slot_family, program, name = _instrument(rng, style.bass if role == 'bass' else style.comp)
            parts.append(Part((comp_role if role == 'comp' else role,), slot_family, program, name))
    return tuple(parts)


def _moods(rng: random.Random, mode: str, bpm: int, dynamics: str, style: Style) -> tp.Tuple[str, ...]:
    """Two moods that fit the mode and tempo (the first goes into the description), plus the style's."""
    fast, slow = bpm >= 108, bpm < 76
    pool = {('major', True): ('happy', 'cheerful', 'bright', 'joyful'),
            ('major', False): ('calm', 'peaceful', 'warm') if slow else ('happy', 'warm', 'relaxed', 'uplifting'),
            ('minor', True): ('tense', 'dramatic', 'intense', 'dark'),
            ('minor', False): ('sad', 'melancholic', 'somber') if slow else ('melancholic', 'mysterious', 'moody')}
    moods = rng.sample(pool[(mode, fast)], 2)
    extra = style.mood or ('gentle' if dynamics == 'soft' else 'powerful' if dynamics == 'loud' else '')
    return tuple(moods + ([extra] if extra and extra not in moods else []))


def sample_spec(seed: int, index: int, clip_seconds: tp.Tuple[float, float] = (10.0, 12.0),
                stream: str = 'train') -> ClipSpec:
    """The clip spec of (seed, index), drawn without rendering; the same arguments give the same spec."""
    if not 0 < clip_seconds[0] <= clip_seconds[1]:
        raise ValueError(f"clip seconds must be 0 < min <= max, got {clip_seconds}; pass e.g. --clip-seconds 10 12")
    rng = _rng(seed, index, stream)
    style = STYLES[rng.choice(sorted(STYLES))]
    bpm = rng.randint(*style.bpm)
    mode = 'major' if rng.random() < style.major_p else 'minor'
    tonic = rng.randrange(12)
    progression = rng.choice(PROGRESSIONS[mode])
    comp, bass = rng.choice(style.comp_patterns), rng.choice(style.bass_patterns)
    parts = _parts(rng, style, 'arpeggio' if comp == 'arpeggio' else 'chords')
    dynamics = rng.choice(DYNAMICS)
    moods = _moods(rng, mode, bpm, dynamics, style)
    seconds = round(rng.uniform(*clip_seconds), 2)
    spec = ClipSpec(seed, index, stream, style.genre, bpm, tonic, mode, progression, parts, comp, bass, dynamics,
                    moods, seconds, description='')
    return dataclasses.replace(spec, description=describe(spec, _rng(seed, index, stream, 'text')))


# --------------------------------------------------------------------------- descriptions

_TEMPO_WORDS = {'slow': ('slow', 'slow-paced', 'unhurried'), 'moderate': ('mid-tempo', 'moderate', 'steady'),
                'fast': ('fast', 'upbeat', 'uptempo', 'lively'), 'very fast': ('very fast', 'rapid', 'breakneck')}
_DYNAMIC_WORDS = {'soft': ('soft', 'gentle', 'quiet'), 'loud': ('loud', 'powerful', 'punchy'),
                  'crescendo': ('building', 'swelling'), 'decrescendo': ('fading', 'receding'), 'medium': ('',)}


def _a(text: str) -> str:
    return ('an ' if text[:1] and text[0] in 'aeiou' else 'a ') + text


def _join(items: tp.Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ', '.join(items[:-1]) + ' and ' + items[-1]


def _key_text(spec: ClipSpec) -> str:
    tonic = TONICS[spec.tonic]
    return f"{tonic[0].upper()}{tonic[1:]} {spec.mode}"


def describe(spec: ClipSpec, rng: random.Random) -> str:
    """A natural-language caption: always an instrument that is really playing, and the tempo and/or the key."""
    style = STYLES[spec.style]
    tempo, mood = rng.choice(_TEMPO_WORDS[spec.tempo_feel]), spec.moods[0]
    main, others = spec.parts[0].name, [p.name for p in spec.parts[1:]]
    names = [main] + others
    noun, genre, key, bpm = rng.choice(style.nouns), spec.style, _key_text(spec), spec.bpm
    dyn = rng.choice(_DYNAMIC_WORDS[spec.dynamics])
    noun_phrase = noun if genre in noun else f"{genre} {noun}"
    with_others = f" with {_join(others)}" if others else ''
    templates = [
        f"{_a(tempo)}, {mood} {main} {noun_phrase} in {key} at {bpm} bpm{with_others}",
        f"{tempo} {noun_phrase} with {_join(names)}",
        f"{mood} {noun_phrase} in {key}, {bpm} bpm, featuring {_join(names)}",
        f"{_join(names)} playing {_a(mood)} {noun_phrase} in {key}",
        f"{genre} instrumental in {key} at {bpm} BPM, {main} on top{with_others}",
        f"{_a(mood)} {noun} in {key} for {_join(names)}, {spec.tempo_feel} tempo",
        f"{_a((dyn + ' ' + tempo).strip())} {noun_phrase} led by {main}, {bpm} bpm, {mood} and in {key}",
        f"{main} {'solo' if not others else 'over ' + _join(others)}, {genre}, {tempo}, {spec.mode} key, {mood}",
    ]
    text = rng.choice(templates)
    if spec.dynamics == 'crescendo' and rng.random() < 0.5:
        text += ', getting louder'
    return text[0].lower() + text[1:] if rng.random() < 0.5 else text[0].upper() + text[1:]


def clip_info(spec: ClipSpec, sample_rate: int) -> dict:
    """The side-car JSON: MusicInfo fields plus exact labels for evaluation."""
    main = spec.parts[0]
    return {
        'title': f"{spec.moods[0].title()} {spec.style} in {_key_text(spec)} #{spec.index}",
        'artist': 'openmagnet synth', 'key': spec.key, 'bpm': spec.bpm, 'genre': spec.style,
        'moods': list(spec.moods), 'keywords': [p.name for p in spec.parts] + [spec.style],
        'description': spec.description, 'name': clip_name(spec.index), 'instrument': main.family,
        # exact labels (not read by MusicInfo)
        'tonic': TONICS[spec.tonic], 'mode': spec.mode, 'tempo_feel': spec.tempo_feel, 'family': spec.families,
        'parts': [dataclasses.asdict(p) for p in spec.parts], 'progression': list(spec.progression),
        'comp_pattern': spec.comp_pattern, 'bass_pattern': spec.bass_pattern, 'dynamics': spec.dynamics,
        'duration': spec.seconds, 'sample_rate': sample_rate, 'seed': spec.seed, 'index': spec.index,
        'stream': spec.stream, 'synth_version': VERSION,
    }


def clip_name(index: int) -> str:
    return f"clip_{index:06d}"


# --------------------------------------------------------------------------- composing notes

Note = tp.Tuple[int, float, float, int]  # pitch, start s, end s, velocity


def _near(pitch_class: int, center: int) -> int:
    """The MIDI pitch of pitch_class within [center - 6, center + 6)."""
    return center - 6 + (pitch_class - (center - 6)) % 12


def _bars(spec: ClipSpec) -> int:
    return math.ceil(spec.seconds * spec.bpm / 240)


def _chord(spec: ClipSpec, bar: int) -> int:
    return spec.progression[bar % len(spec.progression)]


def _chord_classes(spec: ClipSpec, degree: int) -> tp.List[int]:
    """Pitch classes of the diatonic triad (or seventh chord) on a scale degree."""
    scale = SCALES[spec.mode]
    steps = (0, 2, 4, 6) if STYLES[spec.style].sevenths else (0, 2, 4)
    return [(spec.tonic + scale[(degree + s) % 7]) % 12 for s in steps]


def _velocity(spec: ClipSpec, rng: random.Random, time_s: float, offset: int) -> int:
    """Velocity at a time: the dynamics curve, a role offset and a little humanisation."""
    x = min(time_s / spec.seconds, 1.0)
    base = {'soft': 55, 'medium': 78, 'loud': 100, 'crescendo': 45 + 60 * x, 'decrescendo': 105 - 60 * x}
    return max(20, min(127, round(base[spec.dynamics] + offset + rng.randint(-4, 4))))


def _step_time(spec: ClipSpec, bar: int, step: int) -> float:
    """Seconds of a 16th-note step of a bar, off-beat eighths delayed by the style's swing."""
    beats = bar * 4 + step / 4 + (STYLES[spec.style].swing if step % 4 == 2 else 0.0)
    return beats * 60 / spec.bpm


def _melody(spec: ClipSpec, part: Part, rng: random.Random) -> tp.List[Note]:
    """A scale random walk in the style's rhythm cells; on-beat notes lean to chord tones."""
    scale, beat = SCALES[spec.mode], 60 / spec.bpm
    base = _near(spec.tonic, 60 if part.program in _LOW_PROGRAMS else 72)
    degree, notes = rng.choice((0, 2, 4)), []
    for bar in range(_bars(spec)):
        chord = _chord(spec, bar)
        tones = {chord % 7, (chord + 2) % 7, (chord + 4) % 7}
        t = 0.0
        for dur in rng.choice(CELLS[STYLES[spec.style].density]):
            degree = max(-3, min(9, degree + rng.choice((-2, -1, -1, 0, 1, 1, 2))))
            if float(t).is_integer() and degree % 7 not in tones and rng.random() < 0.7:
                degree += rng.choice([s for s in (-1, 1) if (degree + s) % 7 in tones] or [0])
            start = (bar * 4 + t) * beat
            if rng.random() >= 0.1:  # rests
                pitch = base + 12 * (degree // 7) + scale[degree % 7]
                notes.append((pitch, start, start + dur * beat * 0.92, _velocity(spec, rng, start, 8)))
            t += dur
    return notes


def _chords(spec: ClipSpec, rng: random.Random, center: int) -> tp.List[Note]:
    """Block chords in the comp pattern, voiced close around center."""
    pattern = COMP.get(spec.comp_pattern, COMP['sustain'])
    notes = []
    for bar in range(_bars(spec)):
        pitches = sorted(_near(pc, center) for pc in _chord_classes(spec, _chord(spec, bar)))
        for step, length in pattern:
            start, end = _step_time(spec, bar, step), _step_time(spec, bar, step + length)
            velocity = _velocity(spec, rng, start, -10)
            notes += [(p, start, start + 0.95 * (end - start), velocity) for p in pitches]
    return notes


def _arpeggio(spec: ClipSpec, rng: random.Random) -> tp.List[Note]:
    """Chord tones climbing in eighths (sixteenths below 100 bpm)."""
    step_len = 1 if spec.bpm < 100 else 2
    notes = []
    for bar in range(_bars(spec)):
        tones = sorted(_near(pc, 66) for pc in _chord_classes(spec, _chord(spec, bar)))
        tones.append(tones[0] + 12)
        for i, step in enumerate(range(0, 16, step_len)):
            start, end = _step_time(spec, bar, step), _step_time(spec, bar, step + step_len)
            notes.append((tones[i % len(tones)], start, end, _velocity(spec, rng, start, -12)))
    return notes


def _bass(spec: ClipSpec, rng: random.Random) -> tp.List[Note]:
    """A bass line on the chord roots: root, third, fifth, octave and approach notes in the bass pattern."""
    scale, notes = SCALES[spec.mode], []
    for bar in range(_bars(spec)):
        degree, following = _chord(spec, bar), _chord(spec, bar + 1)
        root = _near((spec.tonic + scale[degree % 7]) % 12, 40)
        next_root = _near((spec.tonic + scale[following % 7]) % 12, 40)
        tones = {'R': root, 'O': root + 12,
                 '3': root + (scale[(degree + 2) % 7] - scale[degree % 7]) % 12,
                 '5': root + (scale[(degree + 4) % 7] - scale[degree % 7]) % 12,
                 'A': next_root - (scale[following % 7] - scale[(following - 1) % 7]) % 12}
        for step, length, tone in BASS[spec.bass_pattern]:
            start, end = _step_time(spec, bar, step), _step_time(spec, bar, step + length)
            notes.append((tones[tone], start, start + 0.9 * (end - start), _velocity(spec, rng, start, -2)))
    return notes


_DRUM_OFFSETS = {'k': 4, 's': 0, 'r': -10, 'c': -2, 'h': -22, 'o': -18, 'p': -25, 'y': -15, 'x': -5}


def _drums(spec: ClipSpec, rng: random.Random) -> tp.List[Note]:
    """The style's groove, one hit per 'x' of each drum's 16-step pattern, accents on the beats."""
    notes = []
    for bar in range(_bars(spec)):
        for drum, pattern in sorted(STYLES[spec.style].groove.items()):
            for step, hit in enumerate(pattern):
                if hit == 'x':
                    start = _step_time(spec, bar, step)
                    offset = _DRUM_OFFSETS[drum] + (6 if step % 4 == 0 else 0)
                    notes.append((_DRUM_NOTES[drum], start, start + 0.1, _velocity(spec, rng, start, offset)))
    return notes


def _part_notes(spec: ClipSpec, part: Part, rng: random.Random) -> tp.List[Note]:
    notes = []
    for role in part.roles:
        if role == 'melody':
            notes += _melody(spec, part, rng)
        elif role == 'chords':
            notes += _chords(spec, rng, 54 if 'melody' in part.roles else 62)
        elif role == 'arpeggio':
            notes += _arpeggio(spec, rng)
        elif role == 'bass':
            notes += _bass(spec, rng)
        else:
            notes += _drums(spec, rng)
    return [n for n in notes if n[1] < spec.seconds]


def compose(spec: ClipSpec):
    """The notes of a clip as a `pretty_midi.PrettyMIDI`, one instrument per part (drums on channel 10)."""
    import pretty_midi

    rng = _rng(spec.seed, spec.index, spec.stream, 'notes')
    midi = pretty_midi.PrettyMIDI(initial_tempo=float(spec.bpm))
    for part in spec.parts:
        instrument = pretty_midi.Instrument(program=part.program, is_drum=part.family == 'drums', name=part.name)
        for pitch, start, end, velocity in _part_notes(spec, part, rng):
            instrument.notes.append(pretty_midi.Note(velocity=velocity, pitch=pitch, start=start, end=end))
        midi.instruments.append(instrument)
    return midi


# --------------------------------------------------------------------------- rendering

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
    from ..audio import audio_write
    import torch

    spec = sample_spec(job.seed, job.index, job.clip_seconds, job.stream)
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
    """On a resumed run, insist that everything that shapes the audio matches the earlier run."""
    if not record.is_file():
        return
    try:
        old = json.loads(record.read_text(encoding='utf-8'))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError(f"{record} is not valid JSON; delete it or choose another --out") from None
    changed = [k for k, v in settings.items() if old.get(k) != v]
    if changed:
        diff = ', '.join(f"{k}: {old.get(k)!r} -> {settings[k]!r}" for k in changed)
        raise ValueError(f"{record.parent} was synthesised with other settings ({diff}); "
                         "use the same settings to resume, or another --out")


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
                       soundfont: tp.Optional[PathLike] = None, renderer: str = 'auto',
                       progress: bool = True) -> SynthResult:
    """Write ceil(hours * 3600 / mean clip seconds) clips to out_dir/audio and index them into out_dir/data.jsonl;
    holdout clips (their own seed stream) go to out_dir/holdout/{audio,data.jsonl}. Finished clips are kept,
    so an interrupted run resumes; out_dir/synth.json records the settings and the counts."""
    from .manifest import index_audio_dir

    _validate(hours, workers, holdout, sample_rate)
    clip_seconds = (float(clip_seconds[0]), float(clip_seconds[-1]))
    sample_spec(seed, 0, clip_seconds)  # validates clip_seconds
    font, kind, out = find_soundfont(soundfont), find_renderer(renderer), Path(out_dir)
    clips = math.ceil(round(hours * 3600 / (sum(clip_seconds) / 2), 6))  # 0.016667 h of 10 s clips: 6
    settings = {'version': VERSION, 'seed': seed, 'sample_rate': sample_rate, 'clip_seconds': list(clip_seconds),
                'renderer': kind, 'soundfont_sha256_1mb': _soundfont_sha256(font)}
    record = out / 'synth.json'
    _check_settings(record, settings)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps({**settings, 'soundfont': str(font), 'complete': False}, indent=1) + '\n', record)
    jobs = [_Job(str(out), seed, i, 'train', clip_seconds, sample_rate, str(font), kind) for i in range(clips)]
    jobs += [_Job(str(out / 'holdout'), seed, i, 'holdout', clip_seconds, sample_rate, str(font), kind)
             for i in range(holdout)]
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
