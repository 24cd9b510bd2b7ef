"""Influence scores of training samples, from the proxy's last layer.

TracIn (Pruthi et al., "Estimating Training Data Influence by Tracing Gradient Descent", NeurIPS 2020,
Eq. 3 and Sec. 3.2) scores a training sample ``z`` against a validation set by the sum over checkpoints of
``eta_c <grad l(z; theta_c), grad L_val(theta_c)>``: positive scores are proponents (a gradient step on
``z`` lowers the validation loss). Like the paper's practical variant we take gradients of the last layer
only, where they have a closed form: for a sample with representation ``h``, predictions ``p`` and
targets ``y`` (mean BCE over ``K`` actions), ``dl/dW2 = h r^T`` and ``dl/db2 = r`` with ``r = (p - y)/K``, so

    <grad l(z), G> = sum_k r_k (h . G_W[:, k] + G_b[k])

Cheaper options from Paul et al., "Deep Learning on a Data Diet", NeurIPS 2021 (Sec. 2): **EL2N**,
``||p - y||_2`` at an early checkpoint, and the **gradient norm** ``||r|| sqrt(||h||^2 + 1)`` (last layer).
"""

from __future__ import annotations

import torch

from recsys.distill import proxy
from recsys.distill.proxy import Params
from recsys.distill.stream import ProxyInputs


def last_layer_gradient(params: Params, x: ProxyInputs, targets: torch.Tensor,
                        weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(dL/dW2 [H, K], dL/db2 [K])`` of the (weighted) mean loss of ``x``."""
    w2 = params["w2"].detach().requires_grad_(True)
    b2 = params["b2"].detach().requires_grad_(True)
    with torch.enable_grad():
        loss = proxy.weighted_bce({**params, "w2": w2, "b2": b2}, x, targets, weights)
        gw, gb = torch.autograd.grad(loss, [w2, b2])
    return gw, gb


def _residual_and_hidden(params: Params, x: ProxyInputs, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        h = proxy.hidden(params, x)
        p = torch.sigmoid(h @ params["w2"] + params["b2"])
    return (p - targets) / targets.shape[1], h


def dot_with(params: Params, x: ProxyInputs, targets: torch.Tensor, gradient: tuple[torch.Tensor, torch.Tensor],
             weights: torch.Tensor | None = None) -> torch.Tensor:
    """``[N]`` ``<grad l(z_i), G>`` for every sample (times its weight where given)."""
    r, h = _residual_and_hidden(params, x, targets)
    gw, gb = gradient
    score = (r * (h @ gw + gb)).sum(1)
    return score if weights is None else score * weights


def tracin(checkpoints: list[Params], x: ProxyInputs, targets: torch.Tensor, val: ProxyInputs,
           val_targets: torch.Tensor, lr: float = 1.0) -> torch.Tensor:
    """``[N]`` TracIn scores against the mean loss of ``val`` over ``checkpoints`` (higher: more helpful)."""
    total = torch.zeros(len(x))
    for params in checkpoints:
        total += lr * dot_with(params, x, targets, last_layer_gradient(params, val, val_targets))
    return total


def el2n(params: Params, x: ProxyInputs, targets: torch.Tensor) -> torch.Tensor:
    r, _ = _residual_and_hidden(params, x, targets)
    return (r * targets.shape[1]).norm(dim=1)


def gradient_norm(params: Params, x: ProxyInputs, targets: torch.Tensor) -> torch.Tensor:
    r, h = _residual_and_hidden(params, x, targets)
    return r.norm(dim=1) * (h.pow(2).sum(1) + 1).sqrt()
