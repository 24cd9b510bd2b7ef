"""A2Gen: CAM masking and causality, HSE dedupe equivalence, both generator variants train and serve."""

from __future__ import annotations

import pytest
import torch

from recsys.data.chain_ranking import ChainDataModule
from recsys.models.a2gen import A2GenModule
from recsys.models.cam import CAM


def test_cam_masks_padding_and_is_causal():
    torch.manual_seed(0)
    cam = CAM(seq_dim=6, context_dim=5, dim=8, heads=2).eval()
    x, c = torch.randn(2, 4, 6), torch.randn(2, 5)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    out = cam(x, c, mask=mask)
    x2 = x.clone()
    x2[0, 2:] = torch.randn(2, 6)  # change padding only
    assert torch.allclose(cam(x2, c, mask=mask)[0, :2], out[0, :2], atol=1e-6)
    causal = cam(x, c, causal=True)
    x3 = x.clone()
    x3[:, 3] = torch.randn(2, 6)  # change the last position
    assert torch.allclose(cam(x3, c, causal=True)[:, :3], causal[:, :3], atol=1e-6)
    # the context steers the output (query, gate and residual)
    assert not torch.allclose(cam(x, torch.randn(2, 5), mask=mask), out)


@pytest.mark.parametrize("variant", ["iag", "eag"])
@pytest.mark.parametrize("dataset", ["tmall", "kuairand"])
def test_trains_and_serves(variant, dataset, request):
    torch.manual_seed(0)
    dm = ChainDataModule(request.getfixturevalue(f"prepared_{dataset}"), max_len=8, batch_size=64)
    module = A2GenModule(dm.feature_cardinalities, dm.spec_dict, dim=16, heads=2, variant=variant,
                         optimizer="adamw", lr=3e-3)
    batch = next(iter(dm.train_dataloader()))
    opt = module.configure_optimizers()
    losses = []
    for _ in range(25):
        loss, parts = module.loss(batch)
        assert torch.isfinite(loss) and set(parts) >= {"ce", "mse", "order"}
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0]
    module.eval()
    with torch.no_grad():
        pred = module.predict(batch)
    k = len(dm.spec.actions)
    assert pred.probs.shape == (64, k) and pred.times.shape == (64, k + 1)
    assert ((pred.probs >= 0) & (pred.probs <= 1)).all() and (pred.times >= 0).all()


def test_history_dedupe_is_exact_and_history_matters(prepared_tmall):
    torch.manual_seed(0)
    dm = ChainDataModule(prepared_tmall, max_len=8)
    module = A2GenModule(dm.feature_cardinalities, dm.spec_dict, dim=16, heads=2).eval()
    samples = dm.samples("test")
    probe = samples.__getitems__(list(range(200)))
    seen = torch.zeros(200, dtype=torch.bool)
    rows = torch.repeat_interleave(torch.arange(200), probe.features["history"].lengths())
    seen[rows[probe.history_flags.sum(1) > 0]] = True  # samples whose history shows some action
    a, b = torch.nonzero(seen).flatten()[:2].tolist()
    batch = samples.__getitems__([a] * 5 + [b] * 5)  # repeated histories: the dedupe path
    m = module.model
    with torch.no_grad():
        emb = m.features(batch.features)
        keys = ["history" if k == "item" else f"history_{k}" for k in m.item_keys]
        e = m.item_proj(torch.cat([emb[k].values() for k in keys], -1))
        fast = m.action_level(e, batch.history_flags, batch.history_times, batch.features["history"].values())
        slow = m._action_level(e, batch.history_flags, batch.history_times)
        assert torch.allclose(fast, slow, atol=1e-6)
        base = module.predict(batch).probs
        batch.history_flags = torch.zeros_like(batch.history_flags)
        assert not torch.allclose(module.predict(batch).probs, base)
