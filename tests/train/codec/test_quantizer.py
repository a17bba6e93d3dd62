"""The trainable quantizer (openmagnet/train/codec/quantizer.py): the VQ training rules on toy data
(k-means init, EMA updates, dead codes), the straight-through gradient and the quantizer bypass."""
from __future__ import annotations

import torch

from openmagnet.codec.rvq import EuclideanCodebook
from openmagnet.train.codec.quantizer import TrainableEncodec, ema_update, init_codebook, replace_dead_codes
from tests.train.codec.conftest import clip, tiny_cfg


# ------------------------------------------------------------------------------------------------
# Vector quantizer training rules
# ------------------------------------------------------------------------------------------------
def test_kmeans_init_sets_inited_and_codebook_from_data():
    centers = torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0], [5.0, 5.0]])
    g = torch.Generator().manual_seed(0)
    x = torch.cat([c + 0.1 * torch.randn(25, 2, generator=g) for c in centers])  # [100, 2]
    cb = EuclideanCodebook(2, 4)
    cb.inited.zero_()
    init_codebook(cb, x, iters=20, generator=torch.Generator().manual_seed(8))  # seed 8: one start per cluster
    assert cb.inited.item() == 1
    order = sorted(range(4), key=lambda i: tuple(cb.embed[i].round().tolist()))  # [0,0], [0,5], [5,0], [5,5]
    assert torch.allclose(cb.embed[order], centers[[0, 2, 1, 3]], atol=0.1)
    assert cb.cluster_size[order].tolist() == [25.0] * 4
    assert torch.allclose(cb.embed_avg, cb.embed * cb.cluster_size[:, None])


def test_first_training_batch_kmeans_every_codebook():
    model = TrainableEncodec(tiny_cfg(lstm=0)).train()
    books = [layer._codebook for layer in model.model.quantizer.vq.layers]
    assert all(cb.inited.item() == 0 for cb in books)
    before = [cb.embed.clone() for cb in books]
    out = model(clip().repeat(2, 1, 1), torch.Generator().manual_seed(0))
    assert out.codes.shape == (2, 4, 25) and out.wav.shape == (2, 1, 8000)
    for cb, old in zip(books, before, strict=True):
        assert cb.inited.item() == 1 and not torch.equal(cb.embed, old)
    # the first codebook now holds encoder outputs: every code lies within the data's range
    z = model.model.encoder(clip()).transpose(1, 2).reshape(-1, 16)
    lo, hi = z.min(0).values - 1e-4, z.max(0).values + 1e-4
    assert bool(((books[0].embed >= lo) & (books[0].embed <= hi)).all())


def test_ema_update_math():
    cb = EuclideanCodebook(1, 2)
    cb.decay, cb.epsilon = 0.5, 0.0
    cb.embed.copy_(torch.tensor([[0.0], [10.0]]))
    cb.embed_avg.copy_(cb.embed)
    cb.cluster_size.fill_(1.0)
    ema_update(cb, torch.tensor([[1.0], [2.0], [9.0]]), torch.tensor([0, 0, 1]))
    assert cb.cluster_size.tolist() == [1.5, 1.0]           # 0.5 * 1 + 0.5 * counts [2, 1]
    assert cb.embed_avg.flatten().tolist() == [1.5, 9.5]    # 0.5 * [0, 10] + 0.5 * sums [3, 9]
    assert cb.embed.flatten().tolist() == [1.0, 9.5]        # embed_avg / cluster_size


def test_ema_laplace_smoothing_keeps_unused_codes_finite():
    cb = EuclideanCodebook(2, 4)
    cb.cluster_size.copy_(torch.tensor([0.0, 0.0, 3.0, 1.0]))
    cb.embed_avg.zero_()
    ema_update(cb, torch.ones(4, 2), torch.tensor([2, 2, 3, 3]))
    assert torch.isfinite(cb.embed).all() and cb.embed[:2].abs().max() == 0


def test_dead_codes_are_replaced_from_batch_vectors():
    cb = EuclideanCodebook(3, 6)
    cb.cluster_size.copy_(torch.tensor([5.0, 0.001, 1.0, 0.0, 0.03, 0.01]))  # dead below 2 * (1 - 0.99) = 0.02
    old = cb.embed.clone()
    x = 100 + torch.arange(30.0).view(10, 3)
    n = replace_dead_codes(cb, x, threshold=2.0, generator=torch.Generator().manual_seed(0))
    dead = torch.tensor([False, True, False, True, False, True])
    assert n == 3
    assert torch.equal(cb.embed[~dead], old[~dead])
    assert all(any(torch.equal(row, v) for v in x) for row in cb.embed[dead])
    assert torch.allclose(cb.cluster_size[dead], torch.full((3,), 0.04))  # 2 * threshold * (1 - decay)
    assert torch.allclose(cb.embed_avg[dead], cb.embed[dead] * 0.04)
    assert replace_dead_codes(cb, x, threshold=0.0, generator=torch.Generator()) == 0


def test_straight_through_gradient_reaches_the_encoder():
    model = TrainableEncodec(tiny_cfg()).train()
    out = model(clip(), torch.Generator().manual_seed(0))
    out.wav.pow(2).mean().backward()  # reconstruction only: the path runs through the quantizer
    first = model.model.encoder.model[0].conv.conv
    assert first.weight_v.grad is not None and first.weight_v.grad.abs().sum() > 0
    model.zero_grad()
    model(clip(), torch.Generator().manual_seed(0)).commit.backward()
    assert first.weight_v.grad.abs().sum() > 0
    assert model.model.decoder.model[0].conv.conv.weight_v.grad is None  # commitment does not touch the decoder


def test_eval_mode_forward_is_inference():
    model = TrainableEncodec(tiny_cfg())
    model.train()(clip(), torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad():
        out = model(clip())
        assert torch.equal(out.codes, model.model.encode(clip()))
        assert torch.equal(out.wav, model.model.decode(out.codes)[..., :8000])


def test_pooled_kmeans_init_fills_every_codebook():
    from openmagnet.train.codec.quantizer import init_quantizer

    model = TrainableEncodec(tiny_cfg(lstm=0))
    z = torch.randn(256, 16, generator=torch.Generator().manual_seed(0))
    init_quantizer(model.model.quantizer, z, iters=10, generator=torch.Generator().manual_seed(0), vectors_per_step=64)
    for layer in model.model.quantizer.vq.layers:
        cb = layer._codebook
        assert cb.inited.item() == 1 and len(cb.embed.unique(dim=0)) > 32  # no codebook left on zero residuals
        assert abs(float(cb.cluster_size.sum()) - 64) < 1e-3  # counts in uses per step


def test_quantizer_bypass_feeds_the_latent_to_the_decoder():
    model = TrainableEncodec(tiny_cfg(lstm=0), bypass_p=1.0).train()
    wav = clip().expand(2, -1, -1).contiguous()
    out = model(wav, torch.Generator().manual_seed(0))
    with torch.no_grad():
        direct = model.model.decoder(model.model.encoder(wav))[..., :wav.shape[-1]]
    assert torch.allclose(out.wav, direct, atol=1e-6)  # every example bypassed: no quantization error
    assert out.codes.shape[1] == 4 and bool(model.model.quantizer.vq.layers[0]._codebook.inited)  # codebooks train
    half = TrainableEncodec(tiny_cfg(lstm=0), bypass_p=0.5).train()
    half.load_state_dict(model.state_dict())
    mixed = half(wav, torch.Generator().manual_seed(1)).wav
    assert mixed.shape == wav.shape and torch.isfinite(mixed).all()
