"""Export tiny random MAGNeT models with openmagnet's exporter, and compare openmagnet with audiocraft on them.

    .venv/bin/python bench/export_tiny_models.py export OUT          # OUT/music, OUT/sound
    /work/peer/.venv/bin/python bench/check_audiocraft_loads_export.py OUT/music --dump OUT/music_ac.pt
    .venv/bin/python bench/export_tiny_models.py compare OUT/music OUT/music_ac.pt

The models take the architecture of the test fixtures (tests/fixtures/music10: 32 kHz, t5-base;
sound10: 16 kHz, t5-large), with seeded random weights, and the fixtures' codecs. `compare` loads the
export with openmagnet and recomputes what audiocraft dumped: LM logits of stages 0 and 1 on the same
tokens and condition, and the greedy 1-s generation (decoding steps [2, 1, 1, 1]).
"""
import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
TASKS = {
    "music": dict(fixture="music10", task="music", sample_rate=32000, cfg_dropout=0.3, word_dropout=0.3,
                  codec_checkpoint="//pretrained/facebook/encodec_32khz"),
    "sound": dict(fixture="sound10", task="sound", sample_rate=16000, cfg_dropout=0.1, word_dropout=0.0,
                  codec_checkpoint="//reference/bd44a852/checkpoint.th"),
}


def export(out: Path, seed: int, segment_duration: float) -> None:
    import dataclasses

    import torch

    from openmagnet.checkpoint import lm_from_package, load_package, resolve_codec
    from openmagnet.lm import MagnetLM
    from openmagnet.train.export import build_xp_cfg, export_model

    for name, spec in TASKS.items():
        fixture = FIXTURES / spec["fixture"]
        _, lm_cfg, text_cfg = lm_from_package(load_package(fixture / "state_dict.bin"), str(fixture),
                                              torch.device("cpu"), torch.float32)
        lm_cfg = dataclasses.replace(lm_cfg, segment_duration=segment_duration)
        lm = MagnetLM(lm_cfg)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in lm.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
        args = {k: v for k, v in spec.items() if k != "fixture"}
        xp = build_xp_cfg(lm_cfg, text_cfg, **args, extra={"openmagnet": {"note": "random tiny export", "seed": seed}})
        _, codec_pkg = resolve_codec(fixture)
        path = export_model(out / name, lm.state_dict(), xp, codec_pkg)
        print(f"exported {name}: {path} ({', '.join(sorted(os.listdir(path)))})")


def compare(model_dir: Path, dump: Path) -> int:
    import torch

    from openmagnet import MAGNeT

    torch.set_num_threads(2)
    ref = torch.load(dump, weights_only=True)
    model = MAGNeT.get_pretrained(model_dir, device="cpu")
    failures = 0
    with torch.inference_mode():
        for stage in (0, 1):
            ours = model.lm(ref["codes"], ref["cond"], stage)
            theirs = ref[f"logits_stage{stage}"]
            err = (ours - theirs).abs().max().item()
            ok = ours.shape == theirs.shape and err <= 1e-5
            failures += not ok
            print(f"stage {stage} logits {list(ours.shape)}: max |openmagnet - audiocraft| = {err:.3g}, "
                  f"bit-identical {torch.equal(ours, theirs)} -> {'OK' if ok else 'FAIL'}")
    model.duration = 1.0
    model.set_generation_params(use_sampling=False, decoding_steps=[2, 1, 1, 1])
    _, tokens = model.generate([ref["prompt"]], return_tokens=True)
    same = tokens.shape == ref["greedy_tokens"].shape and torch.equal(tokens.cpu(), ref["greedy_tokens"])
    failures += not same
    print(f"greedy tokens {list(tokens.shape)} equal to audiocraft's: {same}")
    return failures


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export")
    e.add_argument("out", type=Path)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--segment-duration", type=float, default=10.0)
    c = sub.add_parser("compare")
    c.add_argument("model_dir", type=Path)
    c.add_argument("dump", type=Path)
    c.add_argument("--hf-cache", default=str(FIXTURES / "hf_cache"))
    a = p.parse_args()
    if a.command == "export":
        export(a.out, a.seed, a.segment_duration)
        return 0
    import shutil
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="om-export-check-"))
    shutil.copytree(a.hf_cache, tmp / "hub")  # hub caches get written: use a private copy
    os.environ["HF_HUB_CACHE"] = str(tmp / "hub")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        return 1 if compare(a.model_dir, a.dump) else 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
