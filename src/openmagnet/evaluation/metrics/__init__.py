"""The metrics of `openmagnet eval objective` as plug-ins: one interface, one file per metric, one registry.

A metric is a class with a name and a help line, registered with `@register`:

    @register
    class Loudness(Metric):
        name, help = "loudness", "mean loudness difference in LU"

        @classmethod
        def load(cls, options: Options) -> "Loudness":   # load weights (once per evaluation)
            return cls()

        def score(self, clip: Clip) -> dict:             # one clip pair -> its fields of the per-clip row
            ...

        def summarise(self, bootstrap: Bootstrap) -> Summary:   # the report's numbers and their intervals
            ...

Every module of this package is imported when the registry is first read (so a new file here registers its
metric with no other edit), and a module elsewhere registers its own with the same decorator. The modules stay
import-cheap (torch, numpy and the weights load inside the methods): `openmagnet --help` reads the names and
help lines to build `--metrics`.
"""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import typing as tp

if tp.TYPE_CHECKING:
    import numpy as np
    import torch

# The presets: the metrics run by default and the options they set (the KLD's PaSST window, the FAD's embedder).
PRESETS = {"audiocraft-music": {"kld": "20s", "fad": "vggish", "metrics": ("fad", "kld", "clap")},
           "audiocraft-sound": {"kld": "10s", "fad": "vggish", "metrics": ("fad", "kld")}}


@dataclasses.dataclass(frozen=True)
class Options:
    """What a metric may read when it loads: the command's settings."""
    preset: str = "audiocraft-music"
    weights_dir: tp.Optional[str] = None
    seed: int = 0
    captions: tp.Optional[tp.Mapping[str, str]] = None
    progress: bool = True
    fad_embedder: tp.Optional[str] = None   # FAD: vggish or crepe (default: the preset's)
    fad_infinity: bool = False               # FAD: also FAD-inf
    save_embeddings: tp.Any = None           # FAD: a folder for generated.npy and reference.npy

    @property
    def defaults(self) -> tp.Mapping[str, tp.Any]:
        """The preset's settings, e.g. {'kld': '20s', 'fad': 'vggish', 'metrics': (...)}."""
        return PRESETS[self.preset]


@dataclasses.dataclass(frozen=True)
class Clip:
    """One pair of clips, read: the generated one already cut to the reference's duration."""
    name: str
    generated: "torch.Tensor"   # [C, T]
    generated_sr: int
    reference: "torch.Tensor"
    reference_sr: int


@dataclasses.dataclass
class Summary:
    """A metric's part of the report: top-level fields (its headline number first) and 95 % intervals."""
    values: tp.Dict[str, tp.Any]
    intervals: tp.Dict[str, tp.Optional[tp.Dict[str, float]]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Bootstrap:
    """95 % percentile intervals over `draws` resamples of the clips (pairs drawn with replacement); every metric
    draws the same resamples (one seed)."""
    draws: int = 200
    seed: int = 0
    progress: bool = False

    def interval(self, n: int, statistic: tp.Callable[["np.ndarray"], float],
                 desc: tp.Optional[str] = None) -> tp.Optional[tp.Dict[str, float]]:
        """statistic(indices of the clips drawn) over the draws; None without draws or under 2 clips. A progress
        bar named `desc` where given and progress is on (the FAD's resamples take seconds each)."""
        if self.draws <= 0 or n < 2:
            return None
        import numpy as np
        from tqdm import tqdm

        rng = np.random.default_rng(self.seed)
        bar = tqdm(range(self.draws), desc=desc, unit="draw", disable=desc is None or not self.progress)
        stats = np.array([statistic(rng.integers(0, n, n)) for _ in bar])
        stats = stats[np.isfinite(stats)]
        return {"low": float(np.percentile(stats, 2.5)), "high": float(np.percentile(stats, 97.5)),
                "draws": self.draws}


class Metric:
    """The interface. `name` is the `--metrics` word, `help` its line in `--help`; `labels` name the report's
    fields in the summary table (field -> label); `needs_captions`: left out of a preset's default when no
    --captions is given; `order`: place in the help, the report and the table (built-ins 10..40)."""
    name: tp.ClassVar[str]
    help: tp.ClassVar[str]
    labels: tp.ClassVar[tp.Mapping[str, str]] = {}
    needs_captions: tp.ClassVar[bool] = False
    order: tp.ClassVar[int] = 100

    @classmethod
    def check(cls, options: Options) -> None:
        """Refuse bad options with a one-line error, before any clip is read or weights loaded."""

    @classmethod
    def load(cls, options: Options) -> "Metric":
        """The metric ready to score: its weights loaded."""
        raise NotImplementedError

    def settings(self) -> tp.Dict[str, tp.Any]:
        """Entries of the report's `settings` (model names, weights' fingerprints)."""
        return {}

    def score(self, clip: Clip) -> tp.Dict[str, tp.Any]:
        """Score (or embed) one clip pair, keeping what the summary needs; the fields of its per-clip row."""
        raise NotImplementedError

    def summarise(self, bootstrap: Bootstrap) -> Summary:
        """The numbers over every clip scored, with their intervals."""
        raise NotImplementedError

    @classmethod
    def table_rows(cls, report: tp.Mapping[str, tp.Any]) -> tp.List[str]:
        """The summary table's rows (markdown) of this metric's fields in `report`."""
        rows = []
        for key, label in cls.labels.items():
            if key in report:
                ci = report["intervals"].get(key)
                interval = f"[{ci['low']:.4f}, {ci['high']:.4f}]" if ci else ""
                rows.append(f"| {label} | {report[key]:.4f} | {interval} |")
        return rows


_REGISTRY: tp.Dict[str, tp.Type[Metric]] = {}
_DISCOVERED = False
M = tp.TypeVar("M", bound=tp.Type[Metric])


def register(cls: M) -> M:
    """Class decorator: make `cls` a metric of `eval objective` under `cls.name`."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"a metric needs a name of letters, digits, - or _ (got {name!r} on {cls.__name__})")
    if not isinstance(getattr(cls, "help", None), str):
        raise ValueError(f"metric {name!r} needs a help line (the class attribute `help`)")
    known = _REGISTRY.get(name)
    if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(f"metric {name!r} is already registered by {known.__module__}.{known.__qualname__}")
    _REGISTRY[name] = cls
    return cls


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def registered() -> tp.Dict[str, tp.Type[Metric]]:
    """Every metric by name, in their order (the built-ins: fad, kld, clap, chroma)."""
    global _DISCOVERED
    if not _DISCOVERED:
        for module in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{module.name}")
        _DISCOVERED = True
    ranked = sorted(enumerate(_REGISTRY.values()), key=lambda item: (item[1].order, item[0]))
    return {cls.name: cls for _, cls in ranked}


def choose(names: tp.Iterable[str]) -> tp.List[tp.Type[Metric]]:
    """The metrics named, in their order; a one-line error naming the unknown ones."""
    names, known = list(names), registered()
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(unknown)}; choose among {', '.join(known)}")
    return [cls for name, cls in known.items() if name in names]


def metrics_help() -> str:
    """`--metrics` help: the names, the presets' defaults, one line per metric."""
    known = registered()
    lines = "; ".join(f"{name}: {cls.help}" for name, cls in known.items())
    presets = "; ".join(f"{name.split('-')[-1]}: {','.join(p['metrics'])}" for name, p in PRESETS.items())
    blind = [name for name, cls in known.items() if cls.needs_captions]
    text = (f"comma list among {','.join(known)} (default: the preset's; {presets}"
            + (f"; {','.join(blind)} only with --captions" if blind else "") + f"). {lines}")
    return text.replace("%", "%%")  # argparse formats help with %
