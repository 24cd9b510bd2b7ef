"""Task-agnostic compressions of cached text representations, the baselines of MARC (``../shared/PAPERS.md``
§5.3: PCA, autoencoders; MRL lives in :mod:`recsys.distill.marc` as ``mrl_dims``).

Each maps a table ``h [N, H]`` (row 0 = padding) to ``[N, d]`` with row 0 zero, fitted on rows ``1..``:

* :func:`pca` — the top-``d`` principal components of the standardized rows (``torch.linalg.svd`` of the
  centred, per-column standardized matrix; standardized because a few hidden dimensions of language models
  are orders of magnitude larger than the rest and would take every component).
* :func:`autoencoder` — an MLP autoencoder ``H -> hidden -> d -> hidden -> H`` trained on the MSE of the
  standardized rows; the code is the bottleneck.

>>> h = torch.randn(101, 16)
>>> pca(h, 4).shape, bool(pca(h, 4)[0].abs().sum() == 0)
(torch.Size([101, 4]), True)
"""

from __future__ import annotations

import torch
from torch import nn


def _standardized(h: torch.Tensor) -> torch.Tensor:
    rows = h[1:].float()
    return (rows - rows.mean(0)) / rows.std(0).clamp(min=1e-6)


def _with_padding(z: torch.Tensor) -> torch.Tensor:
    return torch.cat([z.new_zeros(1, z.shape[1]), z]).contiguous()


def pca(h: torch.Tensor, d: int) -> torch.Tensor:
    """Top-``d`` principal-component scores of rows ``1..`` of ``h`` (see the module docstring)."""
    x = _standardized(h)
    if d > min(x.shape):
        raise ValueError(f"PCA to {d} dims needs at least {d} rows and columns, got {tuple(x.shape)}")
    _, _, vt = torch.linalg.svd(x, full_matrices=False)
    return _with_padding(x @ vt[:d].T)


def autoencoder(h: torch.Tensor, d: int, *, hidden: int = 256, epochs: int = 30, batch_size: int = 256,
                lr: float = 1e-3, seed: int = 0) -> torch.Tensor:
    """Bottleneck codes of an MLP autoencoder trained on rows ``1..`` of ``h`` (see the module docstring)."""
    x = _standardized(h)
    torch.manual_seed(seed)
    width = x.shape[1]
    encoder = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, d))
    decoder = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, width))
    opt = torch.optim.AdamW([*encoder.parameters(), *decoder.parameters()], lr=lr)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(x.shape[0], generator=g).split(batch_size):
            loss = (decoder(encoder(x[idx])) - x[idx]).pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    with torch.no_grad():
        return _with_padding(encoder(x))
