"""Shared by the codec tests."""
import pytest
import torch


@pytest.fixture(autouse=True)
def single_thread():
    """These models are tiny: intra-op threads only add overhead (a lot on a busy 2-core box)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
