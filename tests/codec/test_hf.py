"""The Hugging Face EnCodec behind a pointer package (openmagnet/codec/hf.py) against audiocraft's
golden tensors, in a fresh process that resolves hub ids from the fixture cache only."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from tests.conftest import FIXTURES

HF_CACHE = FIXTURES / "hf_cache"
DECODE_ATOL = 1e-4


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
def hf_offline_env() -> dict:
    """Environment for a child process that resolves hub ids from the fixture cache only.
    It must be in place before huggingface_hub / transformers are imported; a fresh process also
    lets the test check that `import openmagnet.codec` does not import transformers."""
    env = dict(os.environ, HF_HUB_CACHE=str(HF_CACHE), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)  # whatever made openmagnet importable
    return env


def test_hf_pointer_matches_audiocraft():
    """music10_hf stores {'pretrained': 'facebook/encodec_32khz'}; HFEncodec resolves it offline."""
    script = textwrap.dedent(f"""
        import json, sys, torch
        import openmagnet.codec
        assert "transformers" not in sys.modules, "import openmagnet.codec imported transformers"
        from openmagnet.codec import HFEncodec
        fx = {str(FIXTURES / "music10_hf")!r}
        pkg = torch.load(fx + "/compression_state_dict.bin", weights_only=True)
        ref = torch.load(fx + "/reference.pt", weights_only=True)
        model = HFEncodec.from_pretrained(pkg["pretrained"])
        with torch.no_grad():
            audio = model.decode(ref["codec_decode_codes"])
            codes = model.encode(ref["codec_encode_audio"].float())
        print(json.dumps(dict(
            err=(audio - ref["codec_decode_audio"]).abs().max().item(),
            audio_shape=list(audio.shape), codes_equal=torch.equal(codes, ref["codec_encode_codes"].long()),
            codes_dtype=str(codes.dtype), sample_rate=model.sample_rate, frame_rate=model.frame_rate,
            channels=model.channels, num_codebooks=model.num_codebooks, cardinality=model.cardinality,
            training=model.training, dtype=str(next(model.parameters()).dtype))))
    """)
    proc = subprocess.run([sys.executable, "-c", script], env=hf_offline_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["err"] <= DECODE_ATOL, f"music10_hf: max abs error {out['err']:.3g}"
    assert out["audio_shape"] == [1, 1, 50 * 640]
    assert out["codes_equal"] and out["codes_dtype"] == "torch.int64"
    assert (out["sample_rate"], out["frame_rate"], out["channels"]) == (32000, 50.0, 1)
    assert (out["num_codebooks"], out["cardinality"]) == (4, 2048)
    assert out["training"] is False and out["dtype"] == "torch.float32"
