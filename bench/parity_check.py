#!/usr/bin/env python
"""Compare openmagnet with an audiocraft reference dump on any checkpoint, e.g. the official small
architecture (420 M parameters), which is too big to commit as a fixture.

    # with the harness venv (../shared/peer-audiocraft, see its README):
    $PEER/.venv/bin/python $PEER/make_reference.py --scale small --out refs/small
    $PEER/.venv/bin/python tests/fixtures/tools/dump_reference.py --ref refs/small \
        --out refs/small/reference.pt --peer $PEER --generate-only
    # with ours:
    .venv/bin/python bench/parity_check.py refs/small

Prints the max abs error of the conditioning and of the stage 0-3 logits, and the greedy token
agreement of each generation found in the dump.
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ref", help="checkpoint directory with hf_cache/ and reference.pt (+ reference.json)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    ref_dir = Path(args.ref).resolve()
    os.environ["HF_HUB_CACHE"] = str(ref_dir / "hf_cache")
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch

    from openmagnet import MAGNeT

    torch.set_num_threads(args.threads)
    ref = torch.load(ref_dir / "reference.pt", weights_only=True)
    meta = json.loads((ref_dir / "reference.json").read_text())
    t0 = time.perf_counter()
    model = MAGNeT.get_pretrained(ref_dir, device="cpu")
    print(f"loaded in {time.perf_counter() - t0:.1f} s: {sum(p.numel() for p in model.lm.parameters()):,} LM params")
    prompts = meta["parity_prompts"]
    with torch.inference_mode():
        inputs = model.conditioner.tokenize(prompts + [None] * len(prompts))
        embeds, _ = model.conditioner.encode(inputs)
        print(f"text ids identical: {torch.equal(inputs['input_ids'], ref['text_input_ids'])}; "
              f"cond_embeds max abs err {(embeds - ref['cond_embeds']).abs().max().item():.3g}")
        for stage in range(4):
            logits = model.lm.stage_logits(ref[f"input_stage{stage}"].long(), embeds, stage)
            cols = (logits[..., ::meta["col_stride"]] - ref[f"logits_stage{stage}_cols"]).abs().max().item()
            lse = (torch.logsumexp(logits.double(), -1).float() - ref[f"logits_stage{stage}_lse"]).abs().max().item()
            same = (logits.argmax(-1) == ref[f"logits_stage{stage}_argmax"].long()).float().mean().item()
            print(f"stage {stage}: logits max abs err {cols:.3g} (logsumexp {lse:.3g}), argmax agreement {same:.2%}")
    for arrangement in ("nonoverlap", "stride1"):
        key = f"gen_{arrangement}"
        if key not in ref:
            continue
        model.set_generation_params(use_sampling=False, decoding_steps=meta["gen_decoding_steps"],
                                    span_arrangement=arrangement)
        t0 = time.perf_counter()
        _, tokens = model.generate(meta["gen_descriptions"], return_tokens=True)
        seconds = time.perf_counter() - t0
        expected = ref[key].long()
        agree = (tokens == expected).float().mean().item() if tokens.shape == expected.shape else float("nan")
        per_cb = [f"{(tokens[:, k] == expected[:, k]).float().mean().item():.2%}" for k in range(tokens.shape[1])]
        print(f"greedy {arrangement}: tokens {tuple(tokens.shape)}, agreement {agree:.2%} "
              f"(per codebook {', '.join(per_cb)}), {seconds:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
