"""`recsys marc probe | train` end to end on a small synthetic MovieLens-format release with a tiny random
BERT (built here), MARC codes as CTR features and as GEMs' semantic-ID item vectors, and bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="the `marc` extra (transformers) is not installed")
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

from recsys.cli import main
from recsys.data.prepare import PrepareOptions, make_source, prepare
from recsys.data.synth import synthesize
from recsys.distill.text import item_texts, user_texts


@pytest.fixture(scope="module")
def movielens(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ml")
    synthesize("movielens-1m", root / "raw", users=60, items=120, seed=3)
    prepare(make_source("movielens-1m", root / "raw"), root / "prepared", PrepareOptions(), log=lambda _: None)
    return root / "prepared"


@pytest.fixture(scope="module")
def tiny_bert(movielens, tmp_path_factory) -> Path:
    """A 2-layer BERT (hidden 32) whose WordLevel tokenizer knows the dataset's words."""
    out = tmp_path_factory.mktemp("encoder") / "tiny-bert"
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(item_texts(movielens) + user_texts(movielens),
                            trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"]))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[(s, tok.token_to_id(s)) for s in ("[CLS]", "[SEP]")])
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                         sep_token="[SEP]").save_pretrained(out)
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=64, max_position_embeddings=128)
    transformers.BertModel(config).save_pretrained(out)
    return out


def test_marc_train_then_probe_and_gems_sids(movielens, tiny_bert, tmp_path, capsys):
    codes = tmp_path / "marc" / "codes.safetensors"
    assert main(["marc", "train", "--data", str(movielens), "--encoder", str(tiny_bert), "--out", str(codes),
                 "--dim", "8", "--epochs", "1"]) == 0
    from safetensors.torch import load_file

    tables = load_file(str(codes))
    meta = json.loads(codes.with_suffix(".json").read_text())
    assert tables["item"].shape[1] == 8 and meta["layer"] == 2 and meta["main_label"] == "like"
    assert (tmp_path / "marc" / "cache" / "items" / "manifest.json").exists()
    assert all("valid_proxy" in h for h in meta["history"]) and sum(h.get("best", 0) for h in meta["history"]) == 1
    last = tmp_path / "marc" / "last.safetensors"
    assert main(["marc", "train", "--data", str(movielens), "--encoder", str(tiny_bert), "--out", str(last),
                 "--dim", "8", "--epochs", "2", "--early_stopping", "false"]) == 0
    history = json.loads(last.with_suffix(".json").read_text())["history"]
    assert len(history) == 2 and not any("valid_proxy" in h or "best" in h for h in history)
    tuned = tmp_path / "marc" / "tuned.safetensors"
    assert main(["marc", "train", "--data", str(movielens), "--encoder", str(tiny_bert), "--out", str(tuned),
                 "--dim", "8", "--epochs", "1", "--finetune_layers", "1"]) == 0
    tuned_meta = json.loads(tuned.with_suffix(".json").read_text())
    assert tuned_meta["finetune_layers"] == 1 and "valid_proxy" in tuned_meta["history"][0]
    assert not torch.equal(load_file(str(tuned))["item"], tables["item"])

    out = tmp_path / "probe"
    assert main(["marc", "probe", "--data", str(movielens), "--encoder", str(tiny_bert), "--out", str(out),
                 "--layers", "[0, 2]", "--dims", "[4]", "--methods", "[pca]", "--epochs", "1", "--dim", "8"]) == 0
    summary = json.loads((out / "probe.json").read_text())["summary"]
    assert [(r["layer"], r["method"]) for r in summary] == [(-1, "none"), (0, "pca"), (2, "pca")]
    assert (out / "probe.png").stat().st_size > 1000 and "| 2 | pca | 4 |" in (out / "probe.md").read_text()

    from recsys.data.lifelong import LifelongDataModule
    from recsys.models.semantic_ids import SemanticIds

    dm = LifelongDataModule(str(movielens), positive="like", sid_vectors=str(codes), sid_levels=2, sid_codebook=8)
    sids = SemanticIds.load(dm.semantic_ids_path)
    assert sids.num_items == tables["item"].shape[0] and "-v" in Path(dm.semantic_ids_path).name


def test_bad_inputs_exit_nonzero_with_a_clear_message(movielens, tiny_bert, tmp_path, capsys):
    assert main(["marc", "train", "--data", str(movielens), "--encoder", str(tmp_path / "nowhere"),
                 "--out", str(tmp_path / "c.safetensors")]) == 1
    assert "nowhere" in capsys.readouterr().err
    assert main(["marc", "probe", "--data", str(movielens), "--encoder", str(tiny_bert), "--out", str(tmp_path / "p"),
                 "--layers", "[7]"]) == 1
    assert "layers [7] do not exist" in capsys.readouterr().err
    assert main(["marc", "train", "--data", str(movielens), "--encoder", str(tiny_bert), "--out",
                 str(tmp_path / "c.safetensors"), "--main_label", "purchase"]) == 1
    assert "main label 'purchase'" in capsys.readouterr().err
    assert main(["marc", "train", "--data", str(movielens), "--encoder", str(tiny_bert), "--out",
                 str(tmp_path / "c.safetensors"), "--finetune_layers", "1", "--layer", "0"]) == 1
    assert "use the final layer" in capsys.readouterr().err
    assert not (tmp_path / "c.safetensors").exists()


def test_early_stopping_without_validation_pairs_is_refused(movielens, tiny_bert, tmp_path, capsys, monkeypatch):
    import recsys.distill.marc_data as marc_data
    from recsys.data.splits import VALID

    pairs = marc_data.training_pairs
    monkeypatch.setattr(marc_data, "training_pairs", lambda data, label=None, split=0: tuple(
        t[:0] for t in pairs(data, label, split)) if split == VALID else pairs(data, label, split))
    out = tmp_path / "c.safetensors"
    assert main(["marc", "train", "--data", str(movielens), "--encoder", str(tiny_bert), "--out", str(out)]) == 1
    assert "validation split's pairs" in capsys.readouterr().err and not out.exists()
    assert main(["marc", "train", "--data", str(movielens), "--encoder", str(tiny_bert), "--out", str(out),
                 "--epochs", "1", "--early_stopping", "false"]) == 0


def test_finetuning_trains_only_the_last_layers(movielens, tiny_bert):
    from recsys.distill.finetune import TrainableEncoder, last_blocks
    from recsys.distill.marc import MARCConfig, train_marc
    from recsys.distill.marc_data import encode_dataset, training_pairs

    reps = encode_dataset(movielens, tiny_bert, movielens.parent / "cache-ft")
    item_h, user_h = reps[max(reps)]
    encoder = TrainableEncoder(tiny_bert, item_texts(movielens), 1)
    assert encoder.trainable and all(".layer.1." in n for n in encoder.trainable)
    torch.testing.assert_close(encoder.encode_all(), item_h, atol=2e-2, rtol=1e-2)  # the cache is fp16
    before = {n: p.detach().clone() for n, p in encoder.model.named_parameters()}
    model, _ = train_marc(item_h, user_h, training_pairs(movielens), MARCConfig(dim=8, epochs=1, finetune_lr=1e-3),
                          item_encoder=encoder)
    changed = {n for n, p in encoder.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= set(encoder.trainable)
    assert model.codes(encoder.encode_all(), user_h)["item"].shape == (item_h.shape[0], 8)
    gpt2 = transformers.GPT2Model(transformers.GPT2Config(vocab_size=10, n_embd=8, n_layer=3, n_head=2, bos_token_id=0,
                                                          eos_token_id=0))
    names = last_blocks(gpt2, 2)
    assert any(n.startswith("h.1.") for n in names) and any(n.startswith("ln_f.") for n in names)
    assert not any(n.startswith("h.0.") for n in names)
    with pytest.raises(ValueError, match="cannot fine-tune 4 layers"):
        last_blocks(gpt2, 4)


def test_early_stopping_restores_the_best_epochs_encoder_layers(movielens, tiny_bert):
    """Fine-tuned with validation pairs, MARC returns the best epoch's compressor and encoder layers: the
    same as training for just that many epochs, and their validation loss is the one recorded for it."""
    from recsys.data.splits import VALID
    from recsys.distill.finetune import TrainableEncoder
    from recsys.distill.marc import MARCConfig, _encoded_validation_proxy, train_marc
    from recsys.distill.marc_data import encode_dataset, training_pairs

    reps = encode_dataset(movielens, tiny_bert, movielens.parent / "cache-ft")
    item_h, user_h = reps[max(reps)]
    pairs, valid = training_pairs(movielens), training_pairs(movielens, split=VALID)
    config = MARCConfig(dim=8, epochs=4, lr=3e-2, finetune_lr=3e-3)

    def trained(epochs: int, held_out):
        encoder = TrainableEncoder(tiny_bert, item_texts(movielens), 1)
        config.epochs = epochs
        model, history = train_marc(item_h, user_h, pairs, config, item_encoder=encoder, valid=held_out)
        return model, encoder, history

    model, encoder, history = trained(4, valid)
    losses = [h["valid_proxy"] for h in history]
    best = min(range(4), key=losses.__getitem__)
    assert best < 3  # the proxy overfits this tiny data early: the restore below is exercised, not a no-op
    assert [h.get("best", 0.0) for h in history] == [1.0 if e == best else 0.0 for e in range(4)]
    assert _encoded_validation_proxy(model, encoder, user_h, valid, config) == pytest.approx(losses[best], rel=1e-5)
    _, reference, _ = trained(best + 1, None)
    for (name, p), (_, q) in zip(encoder.named_parameters(), reference.named_parameters()):
        torch.testing.assert_close(p, q, msg=name)
