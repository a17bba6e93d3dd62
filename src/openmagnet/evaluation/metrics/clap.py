"""CLAP score: the cosine between the CLAP embedding of each generated clip (a 10-s window at a random offset,
seeded) and of its caption, averaged over clips (the model in evaluation/clap.py). Needs --captions."""
from __future__ import annotations

import typing as tp

from . import Bootstrap, Clip, Metric, Options, Summary, register


@register
class CLAP(Metric):
    name, order, needs_captions = "clap", 30, True
    help = "cosine of the CLAP embeddings of each generated clip and its caption (needs --captions)"
    labels = {"clap": "CLAP"}

    def __init__(self, scorer: tp.Any, captions: tp.Mapping[str, str], seed: int):
        self.scorer, self.captions, self.seed = scorer, captions, seed
        self.scores: tp.List[float] = []

    @classmethod
    def check(cls, options: Options) -> None:
        if options.captions is None:
            raise ValueError("the CLAP score needs the captions: pass --captions MANIFEST (data.jsonl with "
                             "'path' and 'description', or a folder of side-car JSON)")

    @classmethod
    def load(cls, options: Options) -> "CLAP":
        from ..clap import ClapScorer

        cls.check(options)
        scorer = ClapScorer.load(weights_dir=options.weights_dir, seed=options.seed)
        return cls(scorer, options.captions or {}, options.seed)

    def settings(self) -> tp.Dict[str, tp.Any]:
        return {"clap_model": {"weights": self.scorer.fingerprint,
                               "crop": f"10-s window at a random offset, seed {self.seed}"}}

    def score(self, clip: Clip) -> tp.Dict[str, tp.Any]:
        text = self.captions.get(clip.name)
        if text is None:
            raise ValueError(f"{clip.name}: no caption for this clip in --captions")
        self.scores.append(self.scorer.score(clip.generated, clip.generated_sr, text))
        return {"clap": self.scores[-1]}

    def summarise(self, bootstrap: Bootstrap) -> Summary:
        import numpy as np

        scores = np.array(self.scores)
        return Summary({"clap": float(scores.mean())},
                       {"clap": bootstrap.interval(len(scores), lambda idx: float(scores[idx].mean()))})
