"""The Hilbert-Schmidt Independence Criterion with Gaussian (RBF) kernels: MARC's information constraints.

MARC (arXiv 2604.18146; ``../shared/PAPERS.md`` §5.2) decouples its modules with HSIC: *maximize* the
dependence between the encoder's representation and its compressed code, *minimize* the dependence between
the code and the matching network's hidden layer. The paper's estimator and kernel settings are not public;
ours (a reconstruction) is the standard one:

* **Biased empirical HSIC** (Gretton et al., ALT 2005, Eq. 4):
  ``HSIC(X, Y) = tr(K H L H) / (n - 1)^2`` with ``K_ij = k(x_i, x_j)``, ``L_ij = l(y_i, y_j)`` and the
  centring matrix ``H = I - 11^T / n``; ``O(n^2 d)`` per batch of ``n``.
* **Gaussian kernels** ``k(x, x') = exp(-||x - x'||^2 / (2 sigma^2))`` with the **median heuristic**:
  ``sigma^2`` = the median of the batch's nonzero pairwise squared distances / 2 (detached, per call), so
  the criterion does not depend on the scale of either representation.
* **Normalized HSIC** ``HSIC(X, Y) / sqrt(HSIC(X, X) HSIC(Y, Y))`` in ``[0, 1]`` (the "nHSIC" of the HSIC
  bottleneck, Ma et al., AAAI 2020): comparable across layers of different widths, so one weight per
  constraint works for any encoder. MARC's losses use it.

>>> g = torch.Generator().manual_seed(0)
>>> x = torch.randn(200, 8, generator=g)
>>> dependent, independent = torch.tanh(x[:, :4] * 2), torch.randn(200, 4, generator=g)
>>> bool(normalized_hsic(x, dependent) > 3 * normalized_hsic(x, independent))
True
"""

from __future__ import annotations

import torch


def rbf_kernel(x: torch.Tensor, sigma2: torch.Tensor | float | None = None) -> torch.Tensor:
    """Gaussian kernel matrix ``[n, n]`` of the rows of ``x [n, d]`` (``sigma2``: ``None`` = median heuristic)."""
    x = x.reshape(x.shape[0], -1).float()
    sq = x.pow(2).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2 * x @ x.T).clamp(min=0)
    if sigma2 is None:
        off = d2.detach()[~torch.eye(x.shape[0], dtype=torch.bool, device=x.device)]
        positive = off[off > 0]
        sigma2 = positive.median() / 2 if positive.numel() else torch.ones((), device=x.device)
    return torch.exp(-d2 / (2 * sigma2))


def _centred(k: torch.Tensor) -> torch.Tensor:
    """``H K H`` without forming ``H``."""
    return k - k.mean(0, keepdim=True) - k.mean(1, keepdim=True) + k.mean()


def _centred_kernels(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if y.shape[0] != x.shape[0] or x.shape[0] < 2:
        raise ValueError(f"HSIC needs >= 2 paired samples, got {x.shape[0]} and {y.shape[0]}")
    return _centred(rbf_kernel(x)), _centred(rbf_kernel(y))


def hsic(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Biased empirical HSIC of paired samples ``x [n, ...]``, ``y [n, ...]`` (RBF kernels, median heuristic)."""
    kc, lc = _centred_kernels(x, y)
    return (kc * lc).sum() / (x.shape[0] - 1) ** 2  # tr(HKH HLH) = <HKH, HLH>_F, and H is idempotent


def normalized_hsic(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``HSIC(x, y) / sqrt(HSIC(x, x) HSIC(y, y))``, in ``[0, 1]`` (see the module docstring)."""
    kc, lc = _centred_kernels(x, y)
    # clamp before the square root: a constant side (e.g. a batch of dead ReLUs) has HSIC(y, y) = 0, and the
    # square root's gradient at 0 is infinite (NaN through the product); such a side is independent: 0
    return (kc * lc).sum() / ((kc * kc).sum() * (lc * lc).sum()).clamp(min=eps).sqrt()
