"""Export a trained GEMs to an artifact, load it with the serving runtime (no Lightning), and check it
answers what the training model answers; tampered or mismatched artifacts are refused."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import pytest
import torch

from recsys.quant.artifact import ArtifactError
from recsys.quant.export import export_gems
from recsys.quant.runtime import GEMsRuntime


def _histories(batch, module):
    """The batch's streams as the runtime's per-user histories (oldest first) plus lifecycle states."""
    feats = batch.features
    out = []
    for b in range(batch.batch_size):
        h = {"items": [], "authors": [], "actions": [], "ages": [], "plays": []}
        for stream in ("life", "mid", "recent"):
            jt = feats[stream]
            lo, hi = int(jt.offsets()[b]), int(jt.offsets()[b + 1])
            h["items"].append(jt.values()[lo:hi])
            h["authors"].append(feats[f"{stream}_author"].values()[lo:hi] if f"{stream}_author" in feats.keys()
                                else torch.zeros(hi - lo, dtype=torch.long))
            h["actions"].append(batch.actions[stream][lo:hi])
            h["ages"].append(batch.ages[stream][lo:hi])
            h["plays"].append(batch.plays[stream][lo:hi])
        out.append({k: torch.cat(v) for k, v in h.items()})
    return out


@pytest.fixture(scope="module")
def artifacts(gems_module_and_batch, tmp_path_factory):
    module, batch = gems_module_and_batch
    root = tmp_path_factory.mktemp("artifacts")
    from recsys.data.prepared import PreparedDataset

    items = PreparedDataset(__import__("pathlib").Path(module.hparams.semantic_ids).parent.parent).items()
    author = torch.from_numpy(items["author"].to_numpy()).long() if "author" in items.columns else None
    out = {p: (export_gems(module, root / p, precision=p, recent=8, mid=32, item_author=author), root / p)
           for p in ("fp32", "fp8")}
    out["fp8-bf16"] = (export_gems(module, root / "fp8-bf16", precision="fp8", base="bf16", recent=8, mid=32,
                                   item_author=author), root / "fp8-bf16")
    return out


def test_runtime_recommends_what_the_model_recommends(gems_module_and_batch, artifacts):
    module, batch = gems_module_and_batch
    manifest, folder = artifacts["fp32"]
    runtime = GEMsRuntime.load(folder)
    items, _, scores = module.recommend(batch, beam_width=20, stage=3)
    got_items, got_scores = runtime.recommend(_histories(batch, module), k=20)
    assert torch.equal(got_items[:, :5], items[:, :5])
    torch.testing.assert_close(got_scores, scores, atol=1e-4, rtol=1e-4)


def test_gated_fusion_exports_and_serves_what_the_model_recommends(gems_module_and_batch, tmp_path):
    """``fusion="gated"``'s learned gains travel in the artifact: the runtime answers what the model answers."""
    from recsys.models.gems_module import GEMsModule

    trained, batch = gems_module_and_batch
    module = GEMsModule(**{**trained.hparams, "fusion": "gated"}).eval()
    missing = module.load_state_dict(trained.state_dict(), strict=False).missing_keys
    assert missing and all(".gate." in k for k in missing)
    with torch.no_grad():
        for name, gain in module.named_parameters():
            if ".gate." in name:
                gain.copy_(torch.rand_like(gain) * 1.5)  # away from 0 and 1: every stream counts
    export_gems(module, tmp_path / "gated", precision="fp32", recent=8, mid=32)
    items, _, scores = module.recommend(batch, beam_width=20, stage=3)
    got_items, got_scores = GEMsRuntime.load(tmp_path / "gated").recommend(_histories(batch, module), k=20)
    assert torch.equal(got_items[:, :5], items[:, :5])
    torch.testing.assert_close(got_scores, scores, atol=1e-4, rtol=1e-4)


def test_fp8_artifact_is_small_and_close(gems_module_and_batch, artifacts):
    module, batch = gems_module_and_batch
    manifest, folder = artifacts["fp8"]
    q = manifest["quantization"]
    assert q["quantized_bytes_fp8"] <= 0.35 * q["quantized_bytes_fp32"]
    assert any(".self_attn.q" in n for n in q["linears"]) and not any("indexer" in n for n in q["linears"])
    from safetensors import safe_open

    with safe_open(folder / "weights.safetensors", "pt") as f:
        assert f.get_tensor("gems.blocks.0.self_attn.q.weight").dtype == torch.float8_e4m3fn
    items, _, _ = module.recommend(batch, beam_width=20, stage=3)
    got, _ = GEMsRuntime.load(folder).recommend(_histories(batch, module), k=20)
    overlap = torch.tensor([len(set(a[:10].tolist()) & set(b[:10].tolist())) / 10 for a, b in zip(items, got)])
    assert overlap.mean() >= 0.8


def test_fp8_with_bf16_rest_runs_in_bf16_and_agrees(gems_module_and_batch, artifacts):
    """FP8 linears with everything else in bf16 (the GPU serving setting): bf16 weights and states, FP8
    linears, and answers close to fp32's."""
    module, batch = gems_module_and_batch
    manifest, folder = artifacts["fp8-bf16"]
    assert (manifest["precision"], manifest["dtype"]) == ("fp8", "bfloat16")
    from safetensors import safe_open

    with safe_open(folder / "weights.safetensors", "pt") as f:
        assert f.get_tensor("gems.blocks.0.self_attn.q.weight").dtype == torch.float8_e4m3fn
        assert f.get_tensor("gems.blocks.0.self_attn.q.bias").dtype == torch.bfloat16
        assert f.get_tensor("gems.final_norm.weight").dtype == torch.bfloat16
    runtime = GEMsRuntime.load(folder)
    assert runtime.dtype == torch.bfloat16
    histories = _histories(batch, module)
    assert runtime.fold({k: v[:5] for k, v in histories[0].items()})[0].dtype == torch.bfloat16
    items, _, _ = module.recommend(batch, beam_width=20, stage=3)
    got, _ = runtime.recommend(histories, k=20)
    overlap = torch.tensor([len(set(a[:10].tolist()) & set(b[:10].tolist())) / 10 for a, b in zip(items, got)])
    assert overlap.mean() >= 0.7


def test_lifecycle_fold_then_cached_state_gives_the_same_answer(gems_module_and_batch, artifacts):
    module, batch = gems_module_and_batch
    runtime = GEMsRuntime.load(artifacts["fp32"][1])
    histories = _histories(batch, module)[:3]
    full, full_scores = runtime.recommend(histories, k=10)
    windows = runtime.recent + runtime.mid
    states = [runtime.fold({k: v[:-windows] for k, v in h.items()}) for h in histories]
    recent_only = [{k: v[-windows:] for k, v in h.items()} for h in histories]
    cached, cached_scores = runtime.recommend(recent_only, k=10, lifecycle=states)
    assert torch.equal(cached, full)
    torch.testing.assert_close(cached_scores, full_scores, atol=1e-5, rtol=1e-5)


def test_tampered_or_mismatched_artifacts_are_refused(artifacts, tmp_path):
    import shutil

    _, folder = artifacts["fp32"]
    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    weights = bad / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="weights.safetensors does not match its sha256"):
        GEMsRuntime.load(bad)

    shutil.rmtree(bad)
    shutil.copytree(folder, bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["versions"]["torch"] = "1.13.0"
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="torch 1.13.0"):
        GEMsRuntime.load(bad)

    # a program archive that asks to unpickle a weight is refused even with a matching checksum
    shutil.rmtree(bad)
    shutil.copytree(folder, bad)
    src = bad / "encode.pt2"
    with zipfile.ZipFile(src) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    cfg_name = next(n for n in entries if n.endswith("model_weights_config.json"))
    cfg = json.loads(entries[cfg_name])
    first = next(iter(cfg["config"]))
    cfg["config"][first]["use_pickle"] = True
    entries[cfg_name] = json.dumps(cfg).encode()
    with zipfile.ZipFile(src, "w") as z:
        for n, b in entries.items():
            z.writestr(n, b)
    from recsys.quant.artifact import sha256

    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["files"]["encode.pt2"] = {"sha256": sha256(src), "bytes": src.stat().st_size}
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="would be unpickled"):
        GEMsRuntime.load(bad)


def test_runtime_does_not_import_the_training_stack(artifacts):
    _, folder = artifacts["fp8"]
    code = (f"import sys; from recsys.quant.runtime import GEMsRuntime; GEMsRuntime.load({str(folder)!r}); "
            "bad = [m for m in ('lightning', 'pytorch_lightning', 'torchrec') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_fit_export_serve_bench(prepared_lifelong, tmp_path, monkeypatch, capsys):
    """`recsys fit` a GEMs config briefly, `recsys export --quantize fp8` its checkpoint, `recsys serve-bench` it."""
    from pathlib import Path

    from recsys.cli import main

    monkeypatch.chdir(tmp_path)
    config = Path(__file__).parent.parent.parent / "configs" / "gems_kuairand1k.yaml"
    assert main(["fit", "--config", str(config), "--data.init_args.data", str(prepared_lifelong),
                 "--data.init_args.recent", "8", "--data.init_args.mid", "32", "--data.init_args.sid_codebook", "16",
                 "--model.init_args.dim", "32", "--model.init_args.top_k", "8", "--model.init_args.recent", "8",
                 "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
                 "--trainer.enable_progress_bar", "false"]) == 0
    ckpt = tmp_path / "runs" / "gems_kuairand1k" / "checkpoints" / "last.ckpt"
    assert main(["export", "--checkpoint", str(ckpt), "--quantize", "fp8", "--out", "art"]) == 0
    manifest = json.loads((tmp_path / "art" / "manifest.json").read_text())
    assert manifest["config"]["recent"] == 8 and manifest["config"]["mid"] == 32  # the data module's windows
    assert main(["serve-bench", "--artifacts", "[art]", "--beams", "[8]", "--batches", "[2]", "--repeats", "1"]) == 0
    assert "| art (fp8) |" in capsys.readouterr().out
    # A sharded checkpoint folder (TorchrecStrategy's format; here of one rank) exports the same way.
    import torch

    from recsys.models import sharded_checkpoint

    plain = torch.load(ckpt, weights_only=True)
    sharded_checkpoint.save(plain, tmp_path / "sharded.ckpt", rank=0, world_size=1, barrier=lambda *a: None)
    assert main(["export", "--checkpoint", str(tmp_path / "sharded.ckpt"), "--quantize", "fp8", "--out", "art2"]) == 0
    assert json.loads((tmp_path / "art2" / "manifest.json").read_text())["config"] == manifest["config"]
    assert main(["export", "--checkpoint", "missing.ckpt", "--out", "x"]) == 1
    assert "missing.ckpt" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_empty_and_malformed_histories(artifacts):
    runtime = GEMsRuntime.load(artifacts["fp32"][1])
    empty = {"items": torch.zeros(0, dtype=torch.long), "actions": torch.zeros(0, dtype=torch.long),
             "ages": torch.zeros(0)}
    items, scores = runtime.recommend([empty], k=5)
    assert items.shape == (1, 5) and torch.isfinite(scores).all()
    with pytest.raises(ValueError, match="history 0: missing 'actions'"):
        runtime.recommend([{"items": torch.tensor([1]), "ages": torch.tensor([1.0])}])
    with pytest.raises(ValueError, match="equal length"):
        runtime.recommend([{"items": torch.tensor([1, 2]), "actions": torch.tensor([1]), "ages": torch.tensor([1.0])}])
