"""MARC on planted data: the codes carry the planted structure, the HSIC constraints act, codes are what the
CTR models read; the compression baselines; the layer probe end to end on a small prepared dataset."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from recsys.distill.compress import autoencoder, pca
from recsys.distill.hsic import normalized_hsic
from recsys.distill.marc import MARC, MARCConfig, save_codes, train_marc
from recsys.models.pretrained import load_vectors


def _planted(seed: int = 0, themes: int = 6, items: int = 400, users: int = 150, width: int = 48, pairs: int = 12000):
    """Item and user 'text representations' around theme directions, plus large nuisance dimensions; a
    user likes an item mostly when their themes match."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(themes, width, generator=g)
    ti, tu = torch.randint(0, themes, (items,), generator=g), torch.randint(0, themes, (users,), generator=g)
    nuisance = torch.zeros(width)
    nuisance[:3] = 20.0  # a few huge dimensions, like a language model's outlier features
    item_h = basis[ti] + 0.5 * torch.randn(items, width, generator=g) + nuisance * torch.randn(items, 1, generator=g)
    user_h = basis[tu] + 0.5 * torch.randn(users, width, generator=g)
    u, i = torch.randint(1, users, (pairs,), generator=g), torch.randint(1, items, (pairs,), generator=g)
    y = (torch.rand(pairs, generator=g) < torch.where(tu[u] == ti[i], 0.85, 0.1)).float()
    return item_h, user_h, (u, i, y), ti, tu


def _centroid_accuracy(z: torch.Tensor, labels: torch.Tensor) -> float:
    """Leave-nothing-out nearest-centroid accuracy of the planted theme from codes (rows 1..)."""
    z, labels = z[1:], labels[1:]
    centroids = torch.stack([z[labels == t].mean(0) for t in labels.unique()])
    return float((torch.cdist(z, centroids).argmin(1) == labels).float().mean())


def test_marc_codes_carry_the_planted_themes_and_hsic_acts():
    item_h, user_h, pairs, ti, tu = _planted()
    model, history = train_marc(item_h, user_h, pairs, MARCConfig(dim=16, epochs=4, decouple=1.0, keep=0.5,
                                                             user_side="text"))
    codes = model.codes(item_h, user_h)
    assert codes["item"].shape == (400, 16) and codes["user"].shape == (150, 16)
    assert codes["item"][0].abs().sum() == 0 and codes["user"][0].abs().sum() == 0
    assert _centroid_accuracy(codes["item"], ti) > 0.9  # chance: 1/6
    assert history[-1]["proxy@16"] < history[0]["proxy@16"]
    # the decoupling term lowers the dependence between the codes and the matcher's hidden layer
    free, _ = train_marc(item_h, user_h, pairs, MARCConfig(dim=16, epochs=4, decouple=0.0, keep=0.0, user_side="text"))
    u, i, _ = pairs

    def dependence(m):
        with torch.no_grad():
            zu, zi = m.user_codes(u[:256], user_h[u[:256]]), m.item(item_h[i[:256]])
            _, hidden = m.matchers["16"](zu, zi)
            return float(normalized_hsic(torch.cat([zu, zi], -1), hidden))

    assert dependence(model) < dependence(free)


def test_the_decoupling_term_moves_the_codes_never_the_matcher():
    """nHSIC(z, m) with m = M(z): were its gradient to reach M, its cheapest minimum is a constant m, a dead
    matcher (measured on synthetic MovieLens before the stop-gradient: the proxy stuck at the base rate)."""
    item_h, user_h, (u, i, y), _, _ = _planted(seed=3)
    model = MARC(item_h, user_h, MARCConfig(dim=8, keep=0.0, decouple=1.0, user_side="text"))
    u, i, y = u[:128], i[:128], y[:128]
    total, parts = model.loss(u, user_h[u], item_h[i], y)
    logit, _ = model.matchers["8"](model.user_codes(u, user_h[u]), model.item(item_h[i]))
    decoupling = total - F.binary_cross_entropy_with_logits(logit, y)  # the HSIC term alone
    assert parts["hsic_decouple"] > 0.01 and 0 < parts["matcher_active"] <= 1
    matcher, compressor = list(model.matchers.parameters()), list(model.item.parameters())
    grads = torch.autograd.grad(decoupling, matcher + compressor, allow_unused=True)
    assert all(g is None or g.abs().max() < 1e-6 for g in grads[:len(matcher)])
    assert any(g is not None and g.abs().max() > 1e-4 for g in grads[len(matcher):])


def test_users_as_ids_learn_their_taste():
    item_h, user_h, pairs, ti, tu = _planted(seed=4)
    model, history = train_marc(item_h, user_h, pairs, MARCConfig(dim=16, epochs=8))  # user_side="id"
    assert not hasattr(model, "user") and history[-1]["proxy@16"] < 0.4 < history[0]["proxy@16"]
    assert _centroid_accuracy(model.user_ids.weight.detach(), tu) > 0.9  # ids group by planted theme (chance 1/6)
    codes = model.codes(item_h, user_h)
    assert set(codes) == {"item"} and _centroid_accuracy(codes["item"], ti) > 0.9  # ids are not exported


def test_contrastive_and_mrl_variants_train():
    item_h, user_h, pairs, ti, _ = _planted(seed=1)
    model, history = train_marc(item_h, user_h, pairs, MARCConfig(dim=16, epochs=2, proxy="contrastive"))
    assert {"proxy@16", "hsic_keep", "hsic_decouple"} <= set(history[-1])
    mrl, history = train_marc(item_h, user_h, pairs, MARCConfig(dim=16, epochs=2, mrl_dims=(4, 8, 16)))
    assert set(mrl.matchers) == {"4", "8", "16"} and "hsic_keep" not in history[-1]
    assert mrl.codes(item_h, user_h)["item"].shape == (400, 16) and "user" not in mrl.codes(item_h, user_h)


def test_codes_files_are_what_the_ctr_models_read(tmp_path):
    item_h, user_h, pairs, _, _ = _planted(seed=2)
    model, _ = train_marc(item_h, user_h, pairs, MARCConfig(dim=8, epochs=1, user_side="text"))
    path = tmp_path / "codes.safetensors"
    save_codes(model.codes(item_h, user_h), path, {"encoder": "test", "layer": -1})
    tables = load_vectors(path, {"item": 400, "user": 150})
    assert tables["item"].shape == (400, 8) and path.with_suffix(".json").exists()
    assert not list(tmp_path.glob(".*tmp*"))
    with pytest.raises(ValueError, match=r"'item' is \(400, 8\), expected \[401, d\]"):
        load_vectors(path, {"item": 401, "user": 150})
    with pytest.raises(FileNotFoundError, match="no such vectors file"):
        load_vectors(tmp_path / "missing.safetensors", {"item": 400})


def test_pca_and_autoencoder_keep_the_structure_despite_outlier_dimensions():
    item_h, _, _, ti, _ = _planted(seed=3)
    raw_top = torch.linalg.svd(item_h[1:] - item_h[1:].mean(0), full_matrices=False)[2][:6]
    assert _centroid_accuracy(torch.cat([torch.zeros(1, 6), (item_h[1:] - item_h[1:].mean(0)) @ raw_top.T]), ti) < \
        _centroid_accuracy(pca(item_h, 6), ti)  # standardizing first keeps the outliers from taking the components
    assert _centroid_accuracy(pca(item_h, 6), ti) > 0.9
    codes = autoencoder(item_h, 6, epochs=20)
    assert codes.shape == (400, 6) and codes[0].abs().sum() == 0
    assert _centroid_accuracy(codes, ti) > 0.6
    with pytest.raises(ValueError, match="PCA to 64 dims"):
        pca(item_h[:10], 64)


def test_validation_pairs_keep_the_best_epoch():
    """With held-out pairs MARC measures their proxy loss every epoch and returns the best epoch's model."""
    from recsys.distill.marc import validation_proxy

    item_h, user_h, (u, i, y), _, _ = _planted(seed=5, pairs=3000)
    train, valid = (u[:1500], i[:1500], y[:1500]), (u[1500:], i[1500:], y[1500:])
    config = MARCConfig(dim=8, epochs=12, lr=2e-2, user_side="text")
    model, history = train_marc(item_h, user_h, train, config, valid=valid)
    losses = [h["valid_proxy"] for h in history]
    best = min(range(len(losses)), key=losses.__getitem__)
    assert [h.get("best", 0.0) for h in history] == [1.0 if e == best else 0.0 for e in range(len(history))]
    assert validation_proxy(model, item_h, user_h, valid, config) == pytest.approx(losses[best], rel=1e-5)
    assert losses[best] < losses[0]
