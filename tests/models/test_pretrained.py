"""Fixed item / user vectors as ranking features: frozen, standardized, checked against the vocabularies,
read by MMoE, PLE, DIN and DeepFM; the layer probe trains a CTR model per (layer, compression, d)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from recsys.data.chain_ranking import ChainDataModule
from recsys.distill.probe import format_probe, layer_probe, plot_probe, summarize
from recsys.models.deepfm import DeepFM
from recsys.models.din import DIN
from recsys.models.mmoe import MMoE
from recsys.models.ple import PLE


@pytest.fixture(scope="module")
def chain_dm(prepared_tmall):
    dm = ChainDataModule(str(prepared_tmall), batch_size=64)
    dm.setup()
    return dm


@pytest.fixture(scope="module")
def vectors(chain_dm, tmp_path_factory):
    card = chain_dm.feature_cardinalities
    g = torch.Generator().manual_seed(0)
    path = tmp_path_factory.mktemp("vectors") / "v.safetensors"
    item = torch.randn(card["item"], 24, generator=g)
    item[:, 0] *= 1000  # an outlier dimension: standardization must tame it
    save_file({"item": item, "user": torch.randn(card["user"], 24, generator=g)}, str(path))
    return path


@pytest.mark.parametrize("cls", [MMoE, PLE, DIN, DeepFM])
def test_models_read_pretrained_vectors_frozen(cls, chain_dm, vectors):
    card, spec = chain_dm.feature_cardinalities, chain_dm.spec_dict
    plain = cls(card, spec, dim=8)
    model = cls(card, spec, dim=8, pretrained=str(vectors), pretrained_bottleneck=4)
    assert model.inputs.out_dim == plain.inputs.out_dim + 2 * 8
    table = model.inputs.pretrained.item_vectors
    assert table.abs()[1:].max() < 50 and table[0].abs().sum() == 0  # standardized, padding row zero
    assert all("vectors" not in name for name, _ in model.named_parameters())  # frozen buffers
    assert "inputs.pretrained.item_vectors" in model.state_dict()  # saved with the checkpoint
    batch = next(iter(chain_dm.train_dataloader()))
    loss, _ = model.loss(batch)
    loss.backward()
    assert model.inputs.pretrained.proj["item"][0].weight.grad.abs().sum() > 0


def test_vectors_of_the_wrong_size_are_refused(chain_dm, tmp_path):
    path = tmp_path / "bad.safetensors"
    save_file({"item": torch.randn(3, 4)}, str(path))
    with pytest.raises(ValueError, match=r"bad.safetensors: 'item' is \(3, 4\), expected \["):
        MMoE(chain_dm.feature_cardinalities, chain_dm.spec_dict, pretrained=str(path))


def test_layer_probe_runs_every_layer_method_and_width(prepared_tmall, chain_dm, tmp_path):
    card = chain_dm.feature_cardinalities
    g = torch.Generator().manual_seed(1)
    layers = {l: (torch.randn(card["item"], 16, generator=g), torch.randn(card["user"], 16, generator=g))
              for l in (0, 3)}
    lines = []
    rows = layer_probe(prepared_tmall, layers, tmp_path, dims=(4,), epochs=1, batch_size=256,
                       main_label="purchase", init_args={"dim": 8}, progress=lines.append)
    assert [(r["layer"], r["method"], r["d"]) for r in rows] == [
        (-1, "none", 0), (0, "linear", 4), (0, "pca", 4), (3, "linear", 4), (3, "pca", 4)]
    assert all(0.0 <= r["auc"] <= 1.0 and r["logloss"] > 0 for r in rows) and len(lines) == 5
    summary = summarize(rows)
    assert "| 3 | pca | 4 | 1 |" in format_probe(summary)
    plot_probe(summary, tmp_path / "probe.png", "test")
    assert (tmp_path / "probe.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="unknown probe methods"):
        layer_probe(prepared_tmall, layers, tmp_path, methods=("svd",))
