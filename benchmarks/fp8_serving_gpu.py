"""FP8 serving on a GPU (issue #6 §3 and §6; issue #5 §6.2's indexer speed-up on a GPU): one script for a
lent GPU, run as is.

1. The trained GEMs of "FP8 serving" in BENCHMARKS.md (d 64), rebuilt from a slim checkpoint without
   Lightning, exported on the device as fp32, bf16, fp8 (FP8 linears, rest fp32) and fp8-bf16 (FP8 linears,
   rest bf16: the paper's setting), then ``serve_bench`` at beam 128 / 512 x batch 1 / 8 / 64; top-10
   agreement of each artifact with fp32 on the same requests; which FP8 kernel the programs call.
2. A paper-scale GEMs with random weights (d 1024, 16 heads, 4 decoder layers, FFN 4d, 100k items, SIDs
   256^3; cost does not depend on the weights' values): bf16 vs fp8-bf16 on the same grid, where decoding
   steps carry up to 64 x 512 tokens.
3. The same large model with a 5,000-event mid-term window: indexer top-256 (stage 3) vs dense (stage 1)
   requests at beam 100, batch 1 and 8 (the paper: 104 ms -> 32 ms).

Everything runs eagerly (``torch.export`` programs, no ``torch.compile``): what the serving runtime does.
Writes Markdown tables to ``--out``. The local (CPU) dry run: ``--smoke``.
"""

from __future__ import annotations

import argparse
import json
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import torch
from safetensors.torch import load_file

from recsys.models.gems import GEMs, GEMsConfig
from recsys.models.semantic_ids import SemanticIds
from recsys.quant.export import export_gems
from recsys.quant.runtime import GEMsRuntime
from recsys.quant.serve_bench import _requests, serve_bench

VARIANTS = {"fp32": ("fp32", "fp32"), "bf16": ("bf16", "bf16"), "fp8": ("fp8", "fp32"), "fp8-bf16": ("fp8", "bf16")}


def trained_gems(folder: Path) -> tuple[SimpleNamespace, int, int, torch.Tensor]:
    """The slim checkpoint (``gems.pt``: hyperparameters + model weights), its SIDs and item -> author map."""
    raw = torch.load(folder / "gems.pt", map_location="cpu", weights_only=True)
    sids = SemanticIds.load(folder / "semantic_ids")
    state = raw["state_dict"]
    names = [k.removeprefix("events.attr_") for k in state if k.startswith("events.attr_")]
    attributes = {n: (state[f"events.attribute_tables.{n}.weight"].shape[0], state[f"events.attr_{n}"].shape[1])
                  for n in names}
    gems = GEMs(GEMsConfig.from_hparams(raw["hyper_parameters"], sids.codebook_sizes, attributes))
    gems.load_state_dict(state)
    author = load_file(str(folder / "item_author.safetensors"))["author"]
    return SimpleNamespace(model=gems.eval(), semantic_ids=sids), raw["recent"], raw["mid"], author


def random_gems(num_items: int, dim: int, layers: int, recent: int, top_k: int, levels: tuple[int, ...],
                seed: int = 0) -> SimpleNamespace:
    """A GEMs with random weights and random distinct SIDs for ``num_items`` items."""
    g = torch.Generator().manual_seed(seed)
    size = 1
    for c in levels:
        size *= c
    flat = torch.randperm(size, generator=g)[: num_items - 1]
    codes = torch.full((num_items, len(levels)), -1, dtype=torch.long)
    for level in reversed(range(len(levels))):
        codes[1:, level] = flat % levels[level]
        flat = flat // levels[level]
    sids = SemanticIds(codes=codes, codebook_sizes=tuple(levels))
    torch.manual_seed(seed)
    cfg = GEMsConfig(num_items=num_items, codebook_sizes=tuple(levels), dim=dim, heads=max(dim // 64, 1),
                     layers=layers, encoder_layers=2, recent=recent, indexer_heads=4, indexer_dim=32, top_k=top_k,
                     cardinalities={"recent": num_items, "mid": num_items, "life": num_items}, dropout=0.0)
    return SimpleNamespace(model=GEMs(cfg).eval(), semantic_ids=sids)


def _count(program: Path, op: str) -> int:
    """How often ``op`` appears in a saved program's serialized graph."""
    with zipfile.ZipFile(program) as z:
        return sum(z.read(n).count(op.encode()) for n in z.namelist() if n.endswith(".json"))


def export_all(module, root: Path, names, device: str, log, **kw) -> list[Path]:
    paths = []
    for name in names:
        precision, base = VARIANTS[name]
        started = time.perf_counter()
        manifest = export_gems(module, root / name, precision=precision, base=base, device=device, **kw)
        calls = sum(_count(root / name / p["file"], "_scaled_mm") for p in manifest["programs"].values())
        log(f"exported {name} in {time.perf_counter() - started:.1f} s; torch._scaled_mm in its graphs: "
            f"{'yes' if calls else 'no'}")
        paths.append(root / name)
    return paths


def agreement(paths: list[Path], beam: int, batch: int, log) -> None:
    """Top-10 overlap and top-1 agreement of each artifact with the first one on the same requests."""
    runtimes = [GEMsRuntime.load(p) for p in paths]
    histories, states = _requests(runtimes[0], batch, seed=1)
    ref, _ = runtimes[0].recommend(histories, k=beam, lifecycle=states)
    log(f"\n| artifact | top-10 overlap with {paths[0].name} | top-1 agreement |\n| :-- | --: | --: |")
    for path, runtime in zip(paths[1:], runtimes[1:]):
        got, _ = runtime.recommend(histories, k=beam, lifecycle=states)
        overlap = sum(len(set(a[:10].tolist()) & set(b[:10].tolist())) / 10 for a, b in zip(ref, got)) / batch
        top1 = (ref[:, 0] == got[:, 0]).float().mean().item()
        log(f"| {path.name} | {overlap:.3f} | {top1:.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trained", type=Path, default=Path(".gpu/gems"), help="folder with gems.pt, semantic_ids/, item_author.safetensors")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/_work/gpu"), help="where the report goes")
    ap.add_argument("--work", type=Path, default=None, help="where the artifacts go (default: OUT/artifacts)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--budget-s", type=float, default=420, help="skip later parts once this much time has passed")
    ap.add_argument("--parts", type=int, nargs="+", default=[1, 2, 3], help="which parts to run")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes: check the script on a CPU")
    args = ap.parse_args()
    start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    report = args.out / "fp8_serving_gpu.md"
    report.write_text("")

    def log(line: str) -> None:
        print(line, flush=True)
        with open(report, "a") as f:
            f.write(line + "\n")

    dev = torch.device(args.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    log(f"# {name}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}\n")
    beams, batches = ([8, 16], [1, 2]) if args.smoke else ([128, 512], [1, 8, 64])
    work = args.work or args.out / "artifacts"

    if 1 in args.parts:
        log("## 1. Trained GEMs (d 64): fp32 vs bf16 vs fp8 vs fp8-bf16\n")
        module, recent, mid, author = trained_gems(args.trained)
        paths = export_all(module, work / "trained", list(VARIANTS), args.device, log, recent=recent, mid=mid,
                           item_author=author)
        agreement(paths, beam=beams[0], batch=64 if not args.smoke else 4, log=log)
        log("")
        serve_bench(paths, beams, batches, repeats=args.repeats, log=log)

    large = dict(num_items=2000, dim=64, layers=2, recent=16, top_k=32, levels=(16, 16, 16)) if args.smoke else \
        dict(num_items=100_000, dim=1024, layers=4, recent=64, top_k=256, levels=(256, 256, 256))
    if 2 in args.parts and time.perf_counter() - start < args.budget_s * 0.5:
        log(f"\n## 2. Large GEMs, random weights ({json.dumps(large)}): bf16 vs fp8-bf16\n")
        module = random_gems(**large)
        paths = export_all(module, work / "large", ["bf16", "fp8-bf16"], args.device, log,
                           mid=64 if args.smoke else 1024)
        agreement(paths, beam=beams[0], batch=4 if args.smoke else 64, log=log)
        log("")
        serve_bench(paths, beams, batches, repeats=args.repeats, log=log)
    else:
        log("\n(part 2 skipped: time budget)")

    if 3 in args.parts and time.perf_counter() - start < args.budget_s * 0.8:
        window = 128 if args.smoke else 5000
        log(f"\n## 3. Large GEMs, {window}-event mid-term window: indexer top-{large['top_k']} vs dense (bf16)\n")
        module = random_gems(**large)
        paths = []
        for stage, label in ((1, "dense"), (3, "indexer")):
            manifest = export_gems(module, work / f"mid-{label}", precision="bf16", mid=window, stage=stage,
                                   device=args.device)
            paths.append(work / f"mid-{label}")
            log(f"exported {label} (stage {manifest['config']['stage']})")
        serve_bench(paths, [8 if args.smoke else 100], [1, 8], repeats=args.repeats, log=log)
    else:
        log("\n(part 3 skipped: time budget)")
    log(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
