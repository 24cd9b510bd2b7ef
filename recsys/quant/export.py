"""``recsys export``: a trained GEMs or A2Gen checkpoint -> a self-describing serving artifact (:mod:`recsys.quant.artifact`),
optionally FP8-quantized (:func:`recsys.quant.quantize_fp8`).

GEMs exports four kinds of programs (:mod:`recsys.quant.gems_serving`): ``fold`` (lifecycle state of
aged-out events), ``encode`` (a request's streams -> the keys/values its beams share) and ``step_<l>`` (one
decoding step per SID level), plus the semantic IDs (codes, codebook sizes: the runtime rebuilds the trie)
and the item -> author map. A2Gen exports one ``score`` program (one user's candidates,
:mod:`recsys.quant.a2gen_serving`). Precision: ``fp32``, ``bf16`` (every floating tensor), or ``fp8`` (the
selected linears in E4M3 per :class:`Fp8Config`, the rest fp32).
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import save_file

import recsys
from recsys.quant.artifact import save_program, staging, write_manifest_and_commit
from recsys.quant.ptq import Fp8Config, quantize_fp8

Precision = Literal["fp32", "bf16", "fp8"]
Base = Literal["fp32", "bf16"]


def _example_windows(gems, recent: int, mid: int, batch: int, dtype: torch.dtype) -> list[torch.Tensor]:
    from recsys.quant.gems_serving import stream_inputs

    d = gems.config.dim
    out = []
    for name in stream_inputs(gems.config.streams):
        stream, field = name.split("_", 1)
        width = recent if stream == "recent" else mid
        if field in ("items", "authors", "actions"):
            out.append(torch.ones(batch, width, dtype=torch.long))
        elif field in ("ages", "plays"):
            out.append(torch.ones(batch, width))
        elif field == "lengths":
            out.append(torch.full((batch,), 2, dtype=torch.long))
        elif field == "total":
            out.append(torch.zeros(batch, d, d, dtype=dtype))
        else:  # life_count
            out.append(torch.ones(batch, dtype=dtype))
    return out


def _cast(model: torch.nn.Module, precision: Precision, base: Base, fp8: Fp8Config | None):
    """``model`` in its serving precision: every floating tensor in ``base`` (fp32 or bf16), then, for
    ``fp8``, the selected linears in E4M3. Returns the model, the FP8 report (or ``None``) and the dtype
    activations flow in."""
    dtype = torch.bfloat16 if "bf16" in (precision, base) else torch.float32
    if dtype == torch.bfloat16:
        events = getattr(model, "events", None)
        exact = {n: getattr(events, n) for n in ("edges", "play_edges") if hasattr(events, n)}
        model = model.to(torch.bfloat16)
        for name, edges in exact.items():  # GEMs' age / play-time bucket boundaries stay exact (fp32 inputs)
            setattr(model.events, name, edges)
    report = quantize_fp8(model, fp8 or Fp8Config()) if precision == "fp8" else None
    return model, report, dtype


def export_gems(module, out: Path, *, precision: Precision = "fp32", base: Base = "fp32", recent: int | None = None,
                mid: int = 1024, stage: int = 3, item_author: torch.Tensor | None = None,
                fp8: Fp8Config | None = None, device: str = "cpu") -> dict:
    """Write a GEMs serving artifact for ``module`` (a :class:`GEMsModule`, or anything with its ``model``
    and ``semantic_ids``) to ``out``; returns the manifest.

    ``precision``: ``fp8`` quantizes the linears :class:`Fp8Config` selects, and ``base`` is the precision of
    everything else (``bf16`` on GPUs: FP8 GEMMs with bf16 activations, the paper's setting; ``fp32`` by
    default, the exact reference). ``device``: where the programs are traced and will run (``cuda``: FP8
    linears use ``torch._scaled_mm`` when the GPU has FP8 tensor cores, the ``auto`` backend). ``recent`` /
    ``mid``: the windows the data module used (requests are padded to them; ``recent`` defaults to the
    model's); ``stage``: 3 reads the mid-term stream through the indexer's top-K (as trained), 1 densely."""
    from recsys.quant.gems_serving import GEMsEncode, GEMsFold, GEMsStep, stream_inputs

    gems = copy.deepcopy(module.model).to(device).eval()
    gems, report, dtype = _cast(gems, precision, base, fp8)
    cfg = gems.config
    recent = recent or cfg.recent
    if "mid" in cfg.streams and mid <= cfg.top_k and stage >= 3:
        raise ValueError(f"mid-term window {mid} must exceed top_k {cfg.top_k} for stage 3")
    out = Path(out)
    with staging(out) as tmp:
        weights: dict[str, torch.Tensor] = {}
        programs: dict[str, dict] = {}
        batch, beams = torch.export.Dim("batch", min=1, max=65536), torch.export.Dim("beams", min=1, max=65536)
        width = torch.export.Dim("events", min=1, max=1 << 22)
        with torch.no_grad(), torch.device(device):  # example inputs on the device
            if "life" in cfg.streams:
                fold = GEMsFold(gems)
                ids = torch.ones(2, 5, dtype=torch.long)
                args = (ids, ids.clone(), ids.clone(), torch.ones(2, 5), torch.ones(2, 5), torch.full((2,), 3))
                ep = torch.export.export(fold, args, dynamic_shapes=({0: batch, 1: width},) * 5 + ({0: batch},))
                weights |= save_program(ep, tmp / "fold.pt2")
                programs["fold"] = {"file": "fold.pt2",
                                    "inputs": ["items", "authors", "actions", "ages", "plays", "lengths"],
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
        save_file({k: v.contiguous().cpu() for k, v in weights.items()}, str(tmp / "weights.safetensors"))
        module.semantic_ids.save(tmp / "semantic_ids")
        if item_author is not None:
            save_file({"author": item_author.to(torch.long).contiguous()}, str(tmp / "item_author.safetensors"))
        manifest = {
            "model": "gems",
            "precision": precision,
            "dtype": str(dtype).removeprefix("torch."),
            "device": torch.device(device).type,
            "config": {"dim": cfg.dim, "heads": cfg.heads, "layers": len(gems.blocks), "streams": list(cfg.streams),
                       "codebook_sizes": list(cfg.codebook_sizes), "num_items": cfg.num_items, "recent": recent,
                       "mid": mid, "top_k": cfg.top_k, "stage": stage, "summary_tokens": cfg.summary_tokens,
                       "has_author": item_author is not None, "play_time": cfg.play_time},
            "programs": programs,
            "quantization": _quantization(report),
            "versions": {"recsys": recsys.__version__, "torch": torch.__version__},
        }
        return write_manifest_and_commit(tmp, out, manifest)


def a2gen_example(model, candidates: int = 3, history: int = 4, tags: int = 2) -> dict:
    """Example inputs of :class:`A2GenScore` (ids 1, lengths full): for ``torch.export`` and tests."""
    from recsys.quant.a2gen_serving import A2GenScore

    score = A2GenScore(model)
    slots = model.n
    return {"ids": {k: torch.ones(candidates, dtype=torch.long) for k in score.single_keys},
            "tags": torch.ones(candidates, tags, dtype=torch.long), "tag_lengths": torch.full((candidates,), tags),
            "history": {k: torch.ones(history, dtype=torch.long) for k in score.history_keys},
            "history_flags": torch.ones(history, slots), "history_times": torch.zeros(history, slots),
            "history_length": torch.tensor([history])}


def export_a2gen(module, out: Path, *, precision: Precision = "fp32", base: Base = "fp32",
                 fp8: Fp8Config | None = None, device: str = "cpu") -> dict:
    """Write an A2Gen serving artifact (one ``score`` program, :mod:`recsys.quant.a2gen_serving`), traced on
    ``device``; ``precision`` and ``base`` as in :func:`export_gems`."""
    from recsys.quant.a2gen_serving import A2GenScore

    model = copy.deepcopy(module.model).to(device).eval()
    model, report, dtype = _cast(model, precision, base, fp8)
    score = A2GenScore(model)
    out = Path(out)
    with staging(out) as tmp:
        cand, hist, tags = (torch.export.Dim(n, min=1, max=1 << 20) for n in ("candidates", "history", "tags"))
        auto = torch.export.Dim.AUTO
        with torch.device(device):
            example = a2gen_example(model)
        shapes = {"ids": {k: {0: cand} for k in example["ids"]},
                  "tags": {0: cand, 1: tags} if model.has_tags else {0: auto, 1: auto},  # unused without tags
                  "tag_lengths": {0: cand} if model.has_tags else {0: auto},
                  "history": {k: {0: hist} for k in example["history"]},
                  "history_flags": {0: hist}, "history_times": {0: hist}, "history_length": None}
        with torch.no_grad():
            ep = torch.export.export(score, (), kwargs=example, dynamic_shapes=shapes)
        weights = save_program(ep, tmp / "score.pt2")
        save_file({k: v.contiguous().cpu() for k, v in weights.items()}, str(tmp / "weights.safetensors"))
        spec = module.spec
        manifest = {
            "model": "a2gen",
            "precision": precision,
            "dtype": str(dtype).removeprefix("torch."),
            "device": torch.device(device).type,
            "config": {"dim": model.dim, "variant": model.variant, "actions": list(spec.actions),
                       "terminal": spec.terminal, "slots": model.n, "time_unit": spec.time_unit,
                       "user_keys": model.user_keys, "item_keys": model.item_keys, "context_keys": model.context_keys,
                       "history_keys": score.history_keys, "has_tags": model.has_tags,
                       "cardinalities": {k: int(v) for k, v in module.hparams.cardinalities.items()}},
            "programs": {"score": {"file": "score.pt2", "inputs": list(example), "outputs": ["probs", "times"]}},
            "quantization": _quantization(report),
            "versions": {"recsys": recsys.__version__, "torch": torch.__version__},
        }
        return write_manifest_and_commit(tmp, out, manifest)


def _quantization(report) -> dict | None:
    if report is None:
        return None
    quantized = [r for r in report.rows if r.quantized]
    return {"format": "float8_e4m3fn", "weight_scales": "per output channel",
            "activation_scales": report.config.activation, "linears": report.quantized,
            "quantized_bytes_fp32": sum(r.bytes_before for r in quantized),
            "quantized_bytes_fp8": sum(r.bytes_after for r in quantized)}


def export_checkpoint(checkpoint: Path, out: Path, *, quantize: Literal["none", "fp8"] = "none",
                      precision: Literal["fp32", "bf16"] = "fp32", mid: int | None = None, stage: int = 3,
                      device: str = "cpu") -> dict:
    """Load a GEMs or A2Gen checkpoint (``weights_only``: our checkpoints hold only tensors and plain
    hyperparameters; a sharded checkpoint folder is consolidated first) and export it. GEMs: ``mid`` defaults to the data module's window saved in the
    checkpoint (1,024 if absent)."""
    checkpoint = Path(checkpoint)
    if checkpoint.is_dir():  # a sharded checkpoint of TorchrecStrategy: whole tables first
        from recsys.models.sharded_checkpoint import META, consolidate

        if not (checkpoint / META).is_file():
            raise FileNotFoundError(f"{checkpoint}: a folder without {META}, not a sharded checkpoint")
        with tempfile.TemporaryDirectory() as tmp:
            plain = Path(tmp) / "consolidated.ckpt"
            consolidate(checkpoint, plain)
            return export_checkpoint(plain, out, quantize=quantize, precision=precision, mid=mid, stage=stage,
                                     device=device)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint}: no such checkpoint")
    raw = torch.load(checkpoint, map_location="cpu", weights_only=True)
    hp = raw.get("hyper_parameters", {})
    base, precision = precision, ("fp8" if quantize == "fp8" else precision)  # fp8: ``precision`` is the rest's
    if "spec" in hp and "variant" in hp:
        from recsys.models.a2gen import A2GenModule

        module = A2GenModule.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True).eval()
        return export_a2gen(module, out, precision=precision, base=base, device=device)
    if "semantic_ids" not in hp:
        raise ValueError(f"{checkpoint}: neither a GEMs nor an A2Gen checkpoint (the models export supports)")
    from recsys.data.prepared import PreparedDataset
    from recsys.models.gems_module import GEMsModule

    module = GEMsModule.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True).eval()
    dm_hparams = raw.get("datamodule_hyper_parameters", {})
    mid = mid or int(dm_hparams.get("mid", 1024))
    recent = int(dm_hparams.get("recent", module.hparams.recent))
    item_author = None
    if "recent_author" in module.hparams.cardinalities:
        items = PreparedDataset(Path(module.hparams.semantic_ids).parent.parent).items()
        item_author = torch.from_numpy(items["author"].to_numpy()).long()
    return export_gems(module, out, precision=precision, base=base, recent=recent, mid=mid, stage=stage,
                       item_author=item_author, device=device)
