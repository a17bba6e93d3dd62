"""Extract tests/evaluation/fixtures/metrics_golden.pt from a dump of the official metrics' code.

    # in the peer-metrics harness (../shared/peer-metrics, its own venv and fabricated weights):
    python -c "import sys; sys.path.insert(0, 'OPENMAGNET/tests/evaluation'); import metrics_golden as m; \
        m.write_clips('clips')"
    .venv/bin/python run_reference.py --audio clips --captions clips/captions.json --out out/golden.pt
    # here:
    python tests/evaluation/make_fixture.py PEER/out/golden.pt

Keeps what the parity tests compare (a few hundred KB): the FAD recipe's windows, embeddings and value, one
clip's log-mel examples; PaSST's per-segment logits, probabilities and KLs and one segment's mel; CLAP's
embeddings, cosines, crop offsets and token ids.
"""
import sys
from pathlib import Path

import torch

KEEP_PREFIXES = (
    "input/sizes", "input/sample_rate",
    "fad/tests/embeddings", "fad/tests/window_clip", "fad/background/embeddings", "fad/background/window_clip",
    "fad/tests/mu", "fad/tests/sigma", "fad/value", "fad/tests/clip1/examples", "fad/tests/clip1/pcm16",
    "kld/passt10/preds/logits", "kld/passt10/preds/probs", "kld/passt10/targets/probs",
    "kld/passt10/preds/seg02/mel", "kld/passt10/kl_pq", "kld/passt10/kl_qp", "kld/passt10/compute/",
    "kld/passt10/segment_", "kld/passt20/preds/logits", "kld/passt20/preds/probs", "kld/passt20/targets/probs",
    "kld/passt20/kl_pq", "kld/passt20/compute/", "kld/passt20/segment_",
    "clap/text/input_ids", "clap/text/attention_mask", "clap/text/text_embeddings",
    "clap/per_clip/clip0/htsat_embedding", "clap/per_clip/clip0/audio_embeddings",
    "clap/per_clip/clip1/audio_embeddings", "clap/per_clip/clip2/audio_embeddings",
    "clap/per_clip/cosine", "clap/per_clip/crop_offset", "clap/batched/audio_embeddings", "clap/batched/cosine",
    "clap/batched/crop_offset", "clap/batched/compute",
)


def main() -> None:
    dump = torch.load(sys.argv[1], weights_only=True)
    keep = {k: v.clone() for k, v in dump.items() if k.startswith(KEEP_PREFIXES)}
    out = Path(__file__).parent / "fixtures" / "metrics_golden.pt"
    torch.save(keep, out)
    print(f"{out}: {len(keep)} tensors, {out.stat().st_size / 1e3:.0f} KB")
    for k in sorted(keep):
        print(f"  {k} {tuple(keep[k].shape)} {keep[k].dtype}")


if __name__ == "__main__":
    main()
