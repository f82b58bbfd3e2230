import pytest
import torch


def random_spd(n, batch=(), dtype=torch.float64, cond=10.0, seed=0, eigvals=None):
    """Q diag(λ) Qᵀ with prescribed or log-uniform eigenvalues in [1, cond]."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(*batch, n, n, generator=g, dtype=torch.float64))
    if eigvals is None:
        lam = cond ** torch.rand(*batch, n, generator=g, dtype=torch.float64)
    else:
        lam = torch.as_tensor(eigvals, dtype=torch.float64).expand(*batch, n)
    x = (q * lam.unsqueeze(-2)) @ q.mT
    return (0.5 * (x + x.mT)).to(dtype)


@pytest.fixture
def spd():
    return random_spd


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
