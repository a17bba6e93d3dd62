"""The music of `openmagnet data synth`: clip specifications drawn from a seed (style, tempo, key and
mode, General MIDI instruments and their roles, dynamics), their descriptions and side-car labels,
and the notes composed from them (a pretty_midi object, imported on use). Rendering and writing the
dataset are in synth.py.
"""
from __future__ import annotations

import dataclasses
import math
import random
import typing as tp

VERSION = 1  # bump when the same (seed, index) would give different music

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


def _parts(rng: random.Random, style: Style, comp_role: str, drums: str = 'style') -> tp.Tuple[Part, ...]:
    """1-4 parts: the lead (melody), then a random subset of the drums / bass / comp (chords or arpeggio) slots;
    drums 'always': the drums are always one of them (a style without drums takes the standard kit)."""
    family, program, name = _instrument(rng, style.lead)
    count = rng.randint(2 if drums == 'always' else 1, 4)
    polyphonic = family in ('piano', 'organ', 'guitar', 'synth pad', 'strings') and program not in (40, 42)
    solo_roles = ('melody', comp_role) if polyphonic else ('melody',)
    parts = [Part(solo_roles if count == 1 else ('melody',), family, program, name)]
    extras = ['bass', 'comp'] + (['drums'] if style.kits or drums == 'always' else [])
    if drums == 'always':
        chosen = ['drums'] + rng.sample(extras[:2], count - 2)
    else:
        chosen = rng.sample(extras, min(count - 1, len(extras)))
    for role in sorted(chosen, key=extras.index):
        if role == 'drums':
            kit = rng.choice(style.kits or (0,))
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


TEMPO_CHOICES = ('style', 'wide')
WIDE_BPM = (60, 180)
DRUM_CHOICES = ('style', 'always')
_PLAIN_GROOVE = {'k': 'x.......x.......', 'r': '....x.......x...', 'h': 'x...x...x...x...'}  # styles without drums


def sample_spec(seed: int, index: int, clip_seconds: tp.Tuple[float, float] = (10.0, 12.0),
                stream: str = 'train', tempo: str = 'style', drums: str = 'style') -> ClipSpec:
    """The clip spec of (seed, index), drawn without rendering; the same arguments give the same spec.
    tempo 'style': the bpm is drawn from the style's range (ballads slow, rock fast); 'wide': from WIDE_BPM
    whatever the style, so that tempo is a property of its own and a model can learn it apart from the genre.
    drums 'style': drums in a random share of the clips of the styles that have a kit; 'always': in every clip
    (styles without drums play a plain backbeat), a steady beat at the clip's tempo for a small model to learn."""
    if not 0 < clip_seconds[0] <= clip_seconds[1]:
        raise ValueError(f"clip seconds must be 0 < min <= max, got {clip_seconds}; pass e.g. --clip-seconds 10 12")
    if tempo not in TEMPO_CHOICES:
        raise ValueError(f"tempo must be one of {', '.join(TEMPO_CHOICES)}, got {tempo!r}")
    if drums not in DRUM_CHOICES:
        raise ValueError(f"drums must be one of {', '.join(DRUM_CHOICES)}, got {drums!r}")
    rng = _rng(seed, index, stream)
    style = STYLES[rng.choice(sorted(STYLES))]
    bpm = rng.randint(*(style.bpm if tempo == 'style' else WIDE_BPM))
    mode = 'major' if rng.random() < style.major_p else 'minor'
    tonic = rng.randrange(12)
    progression = rng.choice(PROGRESSIONS[mode])
    comp, bass = rng.choice(style.comp_patterns), rng.choice(style.bass_patterns)
    parts = _parts(rng, style, 'arpeggio' if comp == 'arpeggio' else 'chords', drums)
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
        for drum, pattern in sorted((STYLES[spec.style].groove or _PLAIN_GROOVE).items()):
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
