"""``recsys export``: a trained checkpoint -> a self-describing serving artifact (:mod:`recsys.quant.artifact`),
optionally FP8-quantized (:func:`recsys.quant.quantize_fp8`).

GEMs exports four kinds of programs (:mod:`recsys.quant.gems_serving`): ``fold`` (lifecycle state of
aged-out events), ``encode`` (a request's streams -> the keys/values its beams share) and ``step_<l>`` (one
decoding step per SID level), plus the semantic IDs (codes, codebook sizes: the runtime rebuilds the trie)
and the item -> author map. Precision: ``fp32``, ``bf16`` (every floating tensor), or ``fp8`` (the
selected linears in E4M3 per :class:`Fp8Config`, the rest fp32).
"""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import save_file

import recsys
from recsys.quant.artifact import save_program, write_manifest_and_commit
from recsys.quant.ptq import Fp8Config, quantize_fp8

Precision = Literal["fp32", "bf16", "fp8"]


def _example_windows(gems, recent: int, mid: int, batch: int, dtype: torch.dtype) -> list[torch.Tensor]:
    from recsys.quant.gems_serving import stream_inputs

    d = gems.config.dim
    out = []
    for name in stream_inputs(gems.config.streams):
        stream, field = name.split("_", 1)
        width = recent if stream == "recent" else mid
        if field in ("items", "authors", "actions"):
            out.append(torch.ones(batch, width, dtype=torch.long))
        elif field == "ages":
            out.append(torch.ones(batch, width))
        elif field == "lengths":
            out.append(torch.full((batch,), 2, dtype=torch.long))
        elif field == "total":
            out.append(torch.zeros(batch, d, d, dtype=dtype))
        else:  # life_count
            out.append(torch.ones(batch, dtype=dtype))
    return out


def export_gems(module, out: Path, *, precision: Precision = "fp32", recent: int | None = None, mid: int = 1024,
                stage: int = 3,
                item_author: torch.Tensor | None = None, fp8: Fp8Config | None = None) -> dict:
    """Write a GEMs serving artifact for ``module`` (a :class:`GEMsModule`) to ``out``; returns the manifest.

    ``recent`` / ``mid``: the windows the data module used (requests are padded to them; ``recent``
    defaults to the model's ``recent``); ``stage``: 3 reads
    the mid-term stream through the indexer's top-K (as trained), 1 densely."""
    from recsys.quant.gems_serving import GEMsEncode, GEMsFold, GEMsStep, stream_inputs

    gems = copy.deepcopy(module.model).eval()
    gems.topk_union = False  # static shapes for torch.export (same numbers)
    report = None
    if precision == "fp8":
        report = quantize_fp8(gems, fp8 or Fp8Config(backend="reference"))
    elif precision == "bf16":
        edges = gems.events.edges
        gems = gems.to(torch.bfloat16)
        gems.events.edges = edges  # age-bucket boundaries stay exact (ages are fp32 inputs)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    cfg = gems.config
    recent = recent or cfg.recent
    if "mid" in cfg.streams and mid <= cfg.top_k and stage >= 3:
        raise ValueError(f"mid-term window {mid} must exceed top_k {cfg.top_k} for stage 3")
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        weights: dict[str, torch.Tensor] = {}
        programs: dict[str, dict] = {}
        batch, beams = torch.export.Dim("batch", min=1, max=65536), torch.export.Dim("beams", min=1, max=65536)
        width = torch.export.Dim("events", min=1, max=1 << 22)
        with torch.no_grad():
            if "life" in cfg.streams:
                fold = GEMsFold(gems)
                ids = torch.ones(2, 5, dtype=torch.long)
                args = (ids, ids.clone(), ids.clone(), torch.ones(2, 5), torch.full((2,), 3))
                ep = torch.export.export(fold, args, dynamic_shapes=({0: batch, 1: width},) * 4 + ({0: batch},))
                weights |= save_program(ep, tmp / "fold.pt2")
                programs["fold"] = {"file": "fold.pt2", "inputs": ["items", "authors", "actions", "ages", "lengths"],
                                    "outputs": ["total", "count"]}
            encode = GEMsEncode(gems)
            example = _example_windows(gems, recent, mid, 2, dtype)
            ep = torch.export.export(encode, tuple(example), dynamic_shapes=(tuple({0: batch} for _ in example),))
            weights |= save_program(ep, tmp / "encode.pt2")
            programs["encode"] = {"file": "encode.pt2", "inputs": encode.inputs, "outputs": encode.outputs()}
            memory = encode(*example)
            mem_shapes = tuple({0: batch} for _ in memory)
            heads, dh = cfg.heads, cfg.dim // cfg.heads
            for level in range(len(cfg.codebook_sizes)):
                step = GEMsStep(gems, level, stage)
                tokens = torch.zeros(2, 3, dtype=torch.long)
                cache = tuple(torch.zeros(2, 3, heads, level, dh, dtype=dtype) for _ in range(2 * len(gems.blocks)))
                if level == 0:
                    cache = ()
                cache_shapes = tuple({0: batch, 1: beams} for _ in cache)
                ep = torch.export.export(step, (tokens, cache, memory),
                                         dynamic_shapes=({0: batch, 1: beams}, cache_shapes, mem_shapes))
                weights |= save_program(ep, tmp / f"step_{level}.pt2")
                programs[f"step_{level}"] = {"file": f"step_{level}.pt2", "inputs": ["tokens", "cache", "memory"],
                                             "outputs": ["log_probs", "cache"]}
        save_file({k: v.contiguous() for k, v in weights.items()}, str(tmp / "weights.safetensors"))
        module.semantic_ids.save(tmp / "semantic_ids")
        if item_author is not None:
            save_file({"author": item_author.to(torch.long).contiguous()}, str(tmp / "item_author.safetensors"))
        quantized_before = sum(r.bytes_before for r in report.rows if r.quantized) if report else 0
        quantized_after = sum(r.bytes_after for r in report.rows if r.quantized) if report else 0
        manifest = {
            "model": "gems",
            "precision": precision,
            "config": {"dim": cfg.dim, "heads": cfg.heads, "layers": len(gems.blocks), "streams": list(cfg.streams),
                       "codebook_sizes": list(cfg.codebook_sizes), "num_items": cfg.num_items, "recent": recent,
                       "mid": mid, "top_k": cfg.top_k, "stage": stage, "summary_tokens": cfg.summary_tokens,
                       "has_author": item_author is not None},
            "programs": programs,
            "quantization": None if report is None else {
                "format": "float8_e4m3fn", "weight_scales": "per output channel",
                "activation_scales": report.config.activation, "linears": report.quantized,
                "quantized_bytes_fp32": quantized_before, "quantized_bytes_fp8": quantized_after},
            "versions": {"recsys": recsys.__version__, "torch": torch.__version__},
        }
        manifest = write_manifest_and_commit(tmp, out, manifest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def export_checkpoint(checkpoint: Path, out: Path, *, quantize: Literal["none", "fp8"] = "none",
                      precision: Literal["fp32", "bf16"] = "fp32", mid: int | None = None, stage: int = 3) -> dict:
    """Load a GEMs checkpoint (``weights_only``: our checkpoints hold only tensors and plain hyperparameters)
    and export it. ``mid`` defaults to the data module's window saved in the checkpoint (1,024 if absent)."""
    from recsys.data.prepared import PreparedDataset
    from recsys.models.gems_module import GEMsModule

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint}: no such checkpoint")
    raw = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if "semantic_ids" not in raw.get("hyper_parameters", {}):
        raise ValueError(f"{checkpoint}: not a GEMs checkpoint (export supports GEMs; A2Gen is on the tracker)")
    module = GEMsModule.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True).eval()
    dm_hparams = raw.get("datamodule_hyper_parameters", {})
    mid = mid or int(dm_hparams.get("mid", 1024))
    recent = int(dm_hparams.get("recent", module.hparams.recent))
    item_author = None
    if "recent_author" in module.hparams.cardinalities:
        items = PreparedDataset(Path(module.hparams.semantic_ids).parent.parent).items()
        item_author = torch.from_numpy(items["author"].to_numpy()).long()
    return export_gems(module, out, precision="fp8" if quantize == "fp8" else precision, recent=recent, mid=mid,
                       stage=stage, item_author=item_author)
