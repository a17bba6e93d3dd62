"""Token sampling (openmagnet/sampling.py): nucleus, top-k and greedy selection."""
import torch

from openmagnet.sampling import sample_top_k, sample_top_p, select_tokens


def test_top_p_keeps_the_token_that_crosses_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    seen = {sample_top_p(probs, 0.6, torch.Generator().manual_seed(i)).item() for i in range(200)}
    assert seen == {0, 1}
    assert {sample_top_p(probs, 0.0, torch.Generator().manual_seed(i)).item() for i in range(50)} == {0}


def test_top_k_renormalises_in_place():
    probs = torch.tensor([[0.4, 0.3, 0.2, 0.1]])
    token = sample_top_k(probs, 2, torch.Generator().manual_seed(0))
    assert token.item() in (0, 1)
    assert torch.allclose(probs, torch.tensor([[0.4 / 0.7, 0.3 / 0.7, 0.0, 0.0]]))


def test_greedy_takes_the_argmax_of_the_untempered_logits():
    logits = torch.tensor([[[1.0, 3.0, 2.0]]])
    assert select_tokens(logits, logits.softmax(-1), False, 0, 0.9).item() == 1
