"""Last-layer influence in closed form, against autograd per-sample gradients."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from recsys.distill import influence, proxy
from recsys.distill.diet import DIETConfig, fresh_proxy
from recsys.distill.selection import quotas, stratified_top
from recsys.distill.stream import ChainStream


@pytest.fixture(scope="module")
def stream(prepared_tmall: Path) -> ChainStream:
    return ChainStream(str(prepared_tmall), block_days=28)


def test_closed_form_scores_equal_autograd_dot_products(stream: ChainStream) -> None:
    x = stream.inputs()
    params = fresh_proxy(stream, DIETConfig(), torch.Generator().manual_seed(0))
    params = {k: v.double() for k, v in params.items()}
    sub, val = x.take(torch.arange(0, 12)), x.take(torch.arange(50, 300))
    sub.slots, val.slots = sub.slots.double(), val.slots.double()
    soft = torch.rand(12, 3, dtype=torch.float64)
    weights = torch.rand(12, dtype=torch.float64) + 0.5
    g = influence.last_layer_gradient(params, val, val.labels.double())
    fast = influence.dot_with(params, sub, soft, g, weights)
    for i in range(12):
        w2, b2 = params["w2"].clone().requires_grad_(True), params["b2"].clone().requires_grad_(True)
        loss = proxy.weighted_bce({**params, "w2": w2, "b2": b2}, sub.take([i]), soft[i : i + 1])
        gw, gb = torch.autograd.grad(loss, [w2, b2])
        expected = weights[i] * ((gw * g[0]).sum() + (gb * g[1]).sum())
        assert float(fast[i]) == pytest.approx(float(expected), rel=1e-9, abs=1e-15)
    norms = influence.gradient_norm(params, sub, soft)
    w2, b2 = params["w2"].clone().requires_grad_(True), params["b2"].clone().requires_grad_(True)
    gw, gb = torch.autograd.grad(proxy.weighted_bce({**params, "w2": w2, "b2": b2}, sub.take([3]), soft[3:4]), [w2, b2])
    assert float(norms[3]) == pytest.approx(float(torch.cat([gw.flatten(), gb]).norm()), rel=1e-9)


def test_tracin_prefers_samples_that_help_validation(stream: ChainStream) -> None:
    """Flipping labels turns proponents into opponents: their TracIn scores drop."""
    x = stream.inputs()
    params = fresh_proxy(stream, DIETConfig(), torch.Generator().manual_seed(0))
    trained, snaps = proxy.train(params, x, epochs=1, checkpoints=2, generator=torch.Generator().manual_seed(0))
    sub = x.take(torch.arange(0, 500))
    clean = influence.tracin(snaps, sub, sub.labels, x.take(torch.arange(500, 2500)), x.labels[500:2500])
    flipped = influence.tracin(snaps, sub, 1 - sub.labels, x.take(torch.arange(500, 2500)), x.labels[500:2500])
    assert clean.mean() > 0 > flipped.mean()


def test_quotas_and_stratified_top() -> None:
    assert quotas(10, np.array([50, 30, 20])).tolist() == [5, 3, 2]
    assert quotas(5, np.array([1, 100])).tolist() == [0, 5]  # largest remainder
    assert quotas(200, np.array([3, 4])).tolist() == [3, 4]  # never more than a group holds
    scores = torch.tensor([0.9, 0.1, 0.8, 0.7, 0.2, 0.3, 0.6, 0.5, 0.4, 0.0])
    strata = torch.tensor([0, 0, 0, 0, 0, 0, 0, 0, 1, 1])
    picked = stratified_top(scores, strata, 5)
    assert picked.tolist() == [0, 2, 3, 6, 8]  # 4 of stratum 0 by score, 1 of stratum 1
