"""A2Gen's baselines (MMoE, PLE, DIN-style, DeepFM) on real chain batches of the small prepared datasets: shapes and
ranges, the shared objective, a one-batch overfit, per-sample independence, vectorisation, DIN's use of the
history, and a short Lightning fit + test with a checkpoint round trip."""

from __future__ import annotations

import doctest
import math
from dataclasses import replace

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

import recsys.models.deepfm as deepfm_module
import recsys.models.mlp as mlp_module
import recsys.models.mmoe as mmoe_module
from recsys.data.batches import ChainBatch
from recsys.data.chain_ranking import ChainDataModule
from recsys.models.chain_module import target_to_time, time_to_target
from recsys.models.deepfm import DeepFM
from recsys.models.din import DIN
from recsys.models.mmoe import MMoE
from recsys.models.ple import PLE

MODELS = {"mmoe": MMoE, "ple": PLE, "din": DIN, "deepfm": DeepFM}
DATASETS = ("tmall", "kuairand")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The models are tiny: one intra-op thread avoids oversubscription on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data(prepared_tmall, prepared_kuairand) -> dict[str, ChainDataModule]:
    out = {}
    for name, path in (("tmall", prepared_tmall), ("kuairand", prepared_kuairand)):
        dm = ChainDataModule(path, max_len=20, batch_size=64, eval_batch_size=256)
        dm.setup()
        out[name] = dm
    return out


def first_batch(dm: ChainDataModule, n: int = 64, stage: str = "train") -> ChainBatch:
    return dm.samples(stage).__getitems__(list(range(n)))


def build(name: str, dm: ChainDataModule, **kwargs) -> MMoE | PLE | DIN | DeepFM:
    torch.manual_seed(0)
    return MODELS[name](dm.feature_cardinalities, dm.spec_dict, **kwargs)


def with_history(batch: ChainBatch, values: torch.Tensor) -> ChainBatch:
    """The batch with the ``history`` key's item ids replaced by ``values`` (same lengths)."""
    kjt = batch.features
    key_offsets = kjt.offset_per_key()
    i = kjt.keys().index("history")
    all_values = kjt.values().clone()
    all_values[key_offsets[i] : key_offsets[i + 1]] = values
    return replace(batch, features=KeyedJaggedTensor(keys=kjt.keys(), values=all_values, lengths=kjt.lengths()))


def test_doctests():
    for module in (mlp_module, mmoe_module, deepfm_module):
        assert doctest.testmod(module).failed == 0


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("name", list(MODELS))
def test_shapes_ranges_and_objective(name, dataset, data):
    dm = data[dataset]
    model = build(name, dm)
    batch = first_batch(dm)
    k = len(dm.spec.actions)
    logits, time_y = model(batch)
    assert logits.shape == (64, k) and time_y.shape == (64, k + 1)

    loss, parts = model.loss(batch)
    assert set(parts) == {"bce", "mse"} and torch.isfinite(loss) and all(torch.isfinite(v) for v in parts.values())
    # the documented objective: mean BCE over actions + 0.1 x MSE on the known times (transformed scale)
    known = torch.isfinite(batch.times) & batch.occurred.bool()
    assert known.any()
    bce = F.binary_cross_entropy_with_logits(logits, batch.occurred[:, :k])
    mse = ((time_y - time_to_target(model.spec, batch.times.nan_to_num()))[known] ** 2).mean()
    torch.testing.assert_close(loss, bce + 0.1 * mse)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)  # NaN times never reach a gradient

    model.eval()
    with torch.no_grad():
        pred = model.predict(batch)
    assert pred.probs.shape == (64, k) and pred.times.shape == (64, k + 1)
    assert ((pred.probs >= 0) & (pred.probs <= 1)).all()
    assert torch.isfinite(pred.times).all() and (pred.times >= 0).all()
    torch.testing.assert_close(pred.times, target_to_time(model.spec, model(batch)[1]))


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("name", list(MODELS))
def test_overfits_one_batch(name, dataset, data):
    dm = data[dataset]
    model = build(name, dm, lr=3e-3)
    batch = first_batch(dm)
    opt = model.configure_optimizers()  # MuonRec: Muon on matrices, AdamW on tables and vectors
    losses, bces = [], []
    for _ in range(40):
        loss, parts = model.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        bces.append(parts["bce"].item())
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < 0.7 * losses[0], losses
    assert bces[-1] < 0.8 * bces[0], bces
    assert sum(b < a for a, b in zip(losses, losses[1:])) >= 30  # decreasing, step after step


@pytest.mark.parametrize("name", list(MODELS))
def test_samples_are_independent(name, data):
    # changing one sample's history changes nothing for the others (no batch statistics, no mixing)
    dm = data["kuairand"]
    model = build(name, dm).eval()
    batch = first_batch(dm)
    lengths = batch.features["history"].lengths()
    row = int(torch.nonzero(lengths > 0)[0])
    hist = batch.features["history"].values().clone()
    start = int(lengths[:row].sum())
    end = start + int(lengths[row])
    hist[start:end] = (hist[start:end] + 7) % dm.feature_cardinalities["item"]
    with torch.no_grad():
        a_logits, a_times = model(batch)
        b_logits, b_times = model(with_history(batch, hist))
    others = torch.arange(64) != row
    torch.testing.assert_close(a_logits[others], b_logits[others])
    torch.testing.assert_close(a_times[others], b_times[others])
    assert not torch.allclose(a_logits[row], b_logits[row], rtol=0, atol=1e-7)


def test_din_uses_the_history(data):
    dm = data["tmall"]
    model = build("din", dm).eval()
    batch = first_batch(dm)
    lengths = batch.features["history"].lengths()
    has = lengths > 0
    assert has.any() and (~has).any()
    n_items = dm.feature_cardinalities["item"]
    with torch.no_grad():
        base = model.predict(batch)
        other = model.predict(with_history(batch, (batch.features["history"].values() + 11) % n_items))
        flags = model.predict(replace(batch, history_flags=1 - batch.history_flags))
        fields, emb = model.inputs(batch)
        _, weights = model.interest(batch, emb)
    # different history items: different outputs exactly where there is a history
    changed = (base.probs - other.probs).abs().amax(1) > 0
    assert torch.equal(changed, has)
    # the action slots of history entries enter too
    assert ((base.probs - flags.probs).abs().amax(1) > 0)[has].all()
    # activation weights: raw (not softmax-normalised) and zero at padding
    assert weights.shape == (64, int(lengths.max()))
    pad = torch.arange(weights.shape[1])[None, :] >= lengths[:, None]
    assert (weights[pad] == 0).all()
    assert not torch.allclose(weights[has].sum(1), torch.ones(int(has.sum())))
    # and the candidate steers the weights (target attention): another item, other weights
    item = batch.features["item"].values()
    moved = with_history(batch, batch.features["history"].values())  # same history
    kjt = moved.features
    values = kjt.values().clone()
    i = kjt.keys().index("item")
    values[kjt.offset_per_key()[i] : kjt.offset_per_key()[i + 1]] = (item + 5) % n_items
    moved = replace(moved, features=KeyedJaggedTensor(keys=kjt.keys(), values=values, lengths=kjt.lengths()))
    with torch.no_grad():
        _, emb2 = model.inputs(moved)
        _, weights2 = model.interest(moved, emb2)
    assert not torch.allclose(weights[has], weights2[has])


class _OpCount(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("name", list(MODELS))
def test_no_python_loop_over_samples(name, data):
    # a vectorised model runs the same tensor operations for 16 samples as for 128
    dm = data["tmall"]
    model = build(name, dm)
    counts = []
    for n in (16, 128):
        batch = first_batch(dm, n)
        with _OpCount() as ops:
            loss, _ = model.loss(batch)
            loss.backward()
        counts.append(ops.count)
    assert counts[0] == counts[1], counts


@pytest.mark.parametrize(("name", "dataset", "optimizer"),
                         [("mmoe", "tmall", "muonrec"), ("ple", "kuairand", "adamw"), ("din", "tmall", "muonrec")])
def test_lightning_fit_test_and_checkpoint(name, dataset, optimizer, data, tmp_path):
    dm = data[dataset]
    model = build(name, dm, optimizer=optimizer, warmup_steps=1, total_steps=3)
    trainer = L.Trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=1, limit_test_batches=1,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp_path)
    trainer.fit(model, dm)
    auc = trainer.callback_metrics["val/auc_mean"]
    assert 0.0 <= float(auc) <= 1.0
    assert "train/bce" in trainer.callback_metrics and "train/mse" in trainer.callback_metrics
    result = trainer.test(model, dm, verbose=False)[0]
    assert 0.0 <= result["test/auc_mean"] <= 1.0
    # hyper-parameters are plain types: the checkpoint loads with weights_only=True and predicts the same
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    loaded = MODELS[name].load_from_checkpoint(path, weights_only=True).eval()
    batch = first_batch(dm, 32, "test")
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.predict(batch).probs, model.predict(batch).probs)


@pytest.mark.parametrize("dataset", DATASETS)
def test_deepfm_adds_the_pairwise_dot_products_of_its_fields(dataset, data):
    """Eq. 1-2 of DeepFM: logits = first order + sum_{i<j} <v_i, v_j> + the deep part, written out pair by
    pair here; a per-action FM weight changes its own action's logit only."""
    dm = data[dataset]
    model = build("deepfm", dm).eval()
    batch = first_batch(dm)
    with torch.no_grad():
        fields, dense, _ = model.inputs.fields(batch)
        n = len(fields)
        assert n >= 3 and all(f.shape == (64, model.hparams.dim) for f in fields)
        pairs = sum((fields[i] * fields[j]).sum(-1) for i in range(n) for j in range(i + 1, n))
        x = torch.cat(fields + dense, dim=-1)
        expected = model.first_order(x) + pairs.unsqueeze(-1) + model.action_head(model.deep(x))
        logits, _ = model(batch)
        torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
        model.fm_weights.view(-1, model.hparams.dim)[0].mul_(2.0)  # action 0's u_0
        moved, _ = model(batch)
    torch.testing.assert_close(moved[:, 0], logits[:, 0] + pairs, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(moved[:, 1:], logits[:, 1:])


@pytest.mark.parametrize("name", list(MODELS))
def test_prior_init_moves_only_the_action_logits_by_the_log_odds(name, data):
    """``init_action_prior(rates)``: each action's logit moves by the same amount on every sample, and two
    rates differ by exactly their log-odds difference (the prior enters the logit once, through the bias);
    the times do not move."""
    dm = data["kuairand"]
    model, batch = build(name, dm).eval(), first_batch(dm)
    k = len(dm.spec.actions)
    low, high = torch.full((k,), 0.05), torch.linspace(0.2, 0.6, k)
    with torch.no_grad():
        logits, times = model(batch)
        model.init_action_prior(low)
        at_low, times_low = model(batch)
        model.init_action_prior(high)
        at_high, _ = model(batch)
    shift = at_low - logits
    assert torch.allclose(shift, shift[:1].expand_as(shift), atol=1e-5)  # one constant per action
    assert not torch.allclose(shift, torch.zeros_like(shift), atol=1e-3)
    log_odds = lambda p: torch.log(p / (1 - p))
    assert torch.allclose(at_high - at_low, (log_odds(high) - log_odds(low)).expand_as(at_low), atol=1e-5)
    assert torch.equal(times, times_low)


def test_prior_init_wants_one_rate_per_action(data):
    model = build("mmoe", data["kuairand"])
    with pytest.raises(ValueError):
        model.init_action_prior(torch.tensor([0.1]))
