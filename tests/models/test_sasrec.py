"""SASRec-style baseline: causality, training signal, and a Lightning run on prepared data."""

from __future__ import annotations

import lightning as L
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys.data.batches import RetrievalBatch
from recsys.data.retrieval import RetrievalDataModule
from recsys.models.sasrec import SASRec, SASRecConfig
from recsys.models.sasrec_module import SASRecModule


def kjt(rows: list[list[int]]) -> KeyedJaggedTensor:
    return KeyedJaggedTensor.from_lengths_sync(
        keys=["item"], values=torch.tensor([i for r in rows for i in r]), lengths=torch.tensor([len(r) for r in rows]))


def test_states_are_causal():
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(num_items=20, dim=16, max_len=6, dropout=0.0)).eval()
    a, _ = model(kjt([[3, 4, 5, 6]]))
    b, _ = model(kjt([[3, 4, 5, 9]]))
    assert torch.allclose(a[0, :3], b[0, :3], atol=1e-6) and not torch.allclose(a[0, 3], b[0, 3])
    scores = model.score_all(model.last_state(kjt([[1, 2], []])))
    assert scores.shape == (2, 20) and torch.isinf(scores[:, 0]).all()


def test_learns_a_deterministic_successor_rule():
    # item i is always followed by item i + 1: a few hundred steps must get next-item accuracy near 1
    torch.manual_seed(0)
    module = SASRecModule(num_items=12, dim=32, num_layers=1, num_heads=2, max_len=5, dropout=0.0, lr=1e-2)
    opt = module.configure_optimizers()
    starts = torch.randint(1, 6, (64,))
    rows = [[int(s) + k for k in range(5)] for s in starts]
    batch = RetrievalBatch(kjt([r[:-1] for r in rows]), torch.tensor([t for r in rows for t in r[1:]]), starts)
    for _ in range(150):
        loss = module.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    module.eval()
    states = module.model.last_state(kjt([[2, 3, 4], [5, 6]]))
    assert module.model.score_all(states).argmax(-1).tolist() == [5, 7]


def test_linear_output_head_is_untied_and_on_muon():
    """``output="linear"``: scores come from the head (not the item table), sampled rows too, and the
    ``muonrec`` preset optimizes the head with Muon while the tables stay on AdamW."""
    from recsys.optim.param_groups import build_param_groups

    torch.manual_seed(0)
    model = SASRec(SASRecConfig(num_items=20, dim=16, max_len=6, dropout=0.0, output="linear")).eval()
    states, table = model.last_state_and_rows(kjt([[1, 2], [3]]), "all")
    assert table is model.head.weight
    torch.testing.assert_close(model.score_all(states)[:, 1:], (states @ model.head.weight.T)[:, 1:])
    _, rows = model.last_state_and_rows(kjt([[1, 2], [3]]), torch.tensor([[4, 5], [6, 7]]))
    torch.testing.assert_close(rows, model.head.weight[torch.tensor([[4, 5], [6, 7]])])
    muon = {n for g in build_param_groups(model, "muonrec") if g["use_muon"] for n in g["param_names"]}
    assert "head.weight" in muon and not any("items" in n or "positions" in n for n in muon)
    try:
        SASRecConfig(num_items=5, output="bias")
    except ValueError as e:
        assert "'tied' or 'linear'" in str(e)
    else:
        raise AssertionError("an unknown output kind must be refused")


def test_lightning_fit_and_test_on_prepared_data(prepared_kuairand, tmp_path):
    data = RetrievalDataModule(prepared_kuairand, positive="click", max_len=10, batch_size=64, train_negatives=4)
    for loss, optimizer, output in (("ce", "muonrec", "tied"), ("bce", "adamw", "tied"), ("ce", "muonrec", "linear")):
        model = SASRecModule(data.num_items, dim=16, max_len=10, loss=loss, optimizer=optimizer, output=output)
        trainer = L.Trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=2, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            default_root_dir=tmp_path)
        trainer.fit(model, data)
        result = trainer.test(model, data, verbose=False)[0]
        assert 0.0 <= result["test/hr@10"] <= result["test/hr@50"] <= 1.0
