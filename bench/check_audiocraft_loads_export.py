"""Check that audiocraft 1.3.0 loads an openmagnet export and generates with it (manual check, not a test).

Run with the peer harness's venv (it never imports openmagnet):

    /work/peer/.venv/bin/python bench/check_audiocraft_loads_export.py MODEL_DIR [--dump OUT.pt]

Loads MODEL_DIR with `audiocraft.models.MAGNeT.get_pretrained`, checks that every tensor of
state_dict.bin landed in the LM (audiocraft loads strictly; this also compares the values),
generates 1 s with decoding_steps [2, 1, 1, 1] (sampled, then greedy), and with --dump saves fixed
inputs and audiocraft's outputs (stage-0 and stage-1 logits of the LM on fixed tokens and a fixed
condition, greedy tokens) for `bench/export_tiny_models.py --compare` to recompute with openmagnet.
The T5 and EnCodec named by the checkpoint come from an offline Hugging Face cache (--hf-cache),
copied to a temporary folder first because hub caches get written.
"""
import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPT = {32000: "happy rock", 16000: "dog barking"}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir")
    p.add_argument("--hf-cache", default=str(ROOT / "tests" / "fixtures" / "hf_cache"),
                   help="offline HF hub cache holding the T5 (and EnCodec) the checkpoint names")
    p.add_argument("--peer", default="/work/peer", help="the audiocraft peer harness (for configure_offline_env)")
    p.add_argument("--dump", default=None, help="write inputs and audiocraft outputs here (.pt)")
    p.add_argument("--frames", type=int, default=60)
    return p.parse_args()


def offline_env(args) -> Path:
    """A private copy of the hub cache, set as HF_HUB_CACHE before any hub import."""
    tmp = Path(tempfile.mkdtemp(prefix="ac-export-check-"))
    shutil.copytree(args.hf_cache, tmp / "hf_cache")
    sys.path.insert(0, args.peer)
    import peer_common

    peer_common.configure_offline_env(tmp, threads=2)
    return tmp


def check_strict(lm, model_dir: Path):
    import torch

    pkg = torch.load(model_dir / "state_dict.bin", weights_only=True)
    saved, live = pkg["best_state"], lm.state_dict()
    assert set(saved) == set(live), (set(saved) ^ set(live))
    for key, value in saved.items():
        assert torch.equal(live[key], value.float()), key
    extra = sorted(k for k in pkg if k not in ("best_state", "xp.cfg"))
    print(f"state dict: {len(saved)} tensors, {sum(v.numel() for v in saved.values())} values, loaded strictly "
          f"and equal to the fp16 file; other package keys (ignored by audiocraft): {extra}")


def fixed_inputs(lm, frames: int):
    import torch

    g = torch.Generator().manual_seed(1234)
    codes = torch.randint(0, lm.card + 1, (2, lm.n_q, frames), generator=g)  # mask id included
    cond = torch.randn(2, 7, lm.dim, generator=g)
    return codes, cond


def lm_logits(lm, codes, cond, stage: int):
    """audiocraft LMModel.forward with a ready condition tensor: logits [B, K, T, card]."""
    import torch

    mask = torch.ones(cond.shape[:2], dtype=torch.long)
    with torch.no_grad():
        return lm(codes, [], {"description": (cond, mask)}, stage=stage)


def main():
    args = parse_args()
    tmp = offline_env(args)
    try:
        run(args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(args):
    import torch

    torch.set_num_threads(2)
    from audiocraft.models import MAGNeT

    model_dir = Path(args.model_dir).resolve()
    model = MAGNeT.get_pretrained(str(model_dir), device="cpu")
    print(f"loaded {model_dir}: {type(model.lm).__name__}, codec {type(model.compression_model).__name__}, "
          f"sample_rate {model.sample_rate}, frame_rate {model.frame_rate}, max_duration {model.max_duration}")
    check_strict(model.lm, model_dir)
    prompt = PROMPT.get(model.sample_rate, "happy rock")
    model.duration = 1.0
    model.set_generation_params(decoding_steps=[2, 1, 1, 1])
    torch.manual_seed(0)
    wav = model.generate([prompt])
    print(f"sampled generate([{prompt!r}]) 1 s, steps [2,1,1,1]: audio {list(wav.shape)}, "
          f"finite {bool(torch.isfinite(wav).all())}, peak {wav.abs().max().item():.3f}")
    model.set_generation_params(use_sampling=False, decoding_steps=[2, 1, 1, 1])
    wav, tokens = model.generate([prompt], return_tokens=True)
    print(f"greedy generate: tokens {list(tokens.shape)}, audio {list(wav.shape)}")
    codes, cond = fixed_inputs(model.lm, args.frames)
    logits = {s: lm_logits(model.lm, codes, cond, s) for s in (0, 1)}
    print(f"LM forward on fixed tokens {list(codes.shape)}: logits {list(logits[0].shape)}")
    if args.dump:
        torch.save({"codes": codes, "cond": cond, "logits_stage0": logits[0], "logits_stage1": logits[1],
                    "greedy_tokens": tokens, "prompt": prompt}, args.dump)
        print(f"wrote {args.dump}")


if __name__ == "__main__":
    main()
