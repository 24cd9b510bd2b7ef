"""What training one configuration on a memory costs against the full stream (issue #8 Sec. 4: >= 30x cheaper),
timed side by side.

``benchmarks/diet_ranking.py`` records every run's seconds, but its full-data and memory runs happen hours apart
and beside other jobs, so their ratio mixes in the machine's load. Here each zoo configuration is trained on
the full stream and on the memory back to back in this one process, one thread, with
:func:`recsys.distill.zoo.train_entry` (what the ranking benchmark and ``recsys distill compare`` run; its
seconds are ``trainer.fit``: data module setup and training, not the test pass). Memory recipes: ``--recipes
EPOCHSxBATCH``, e.g. ``6x512`` (the toolkit's memory recipe, whose doubled learning rates do not change the
cost) and ``6x256`` / ``6x32`` (earlier ones).

    .venv/bin/python benchmarks/diet_cost.py --data PREPARED --memory MEMORY [--zoo configs/distill/zoo_kuairand.yaml]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from recsys.distill.stream import ChainStream
from recsys.distill.zoo import load_zoo, train_entry

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True, help="the prepared dataset (the full stream)")
    p.add_argument("--memory", type=Path, required=True, help="a memory built from it")
    p.add_argument("--zoo", type=Path, default=ROOT / "configs" / "distill" / "zoo_kuairand.yaml")
    p.add_argument("--full", default="2x512", help="full-data recipe, EPOCHSxBATCH")
    p.add_argument("--recipes", nargs="+", default=["6x512", "6x256"], help="memory recipes, EPOCHSxBATCH")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="write the table (markdown) and the raw seconds (json)")
    args = p.parse_args()
    torch.set_num_threads(1)
    main_label = ChainStream(str(args.data)).main_label
    recipes = {"full": args.full, **{f"memory {r}": r for r in args.recipes}}
    seconds: dict[str, dict[str, float]] = {name: {} for name in recipes}
    for entry in load_zoo(args.zoo):
        for name, recipe in recipes.items():
            epochs, batch = map(int, recipe.split("x"))
            path = args.data if name == "full" else args.memory
            r = train_entry(entry, path, epochs=epochs, batch_size=batch, seed=args.seed, main_label=main_label)
            seconds[name][entry.name] = r["train_seconds"]
            print(f"{entry.name:<12} {name:<16} {r['train_seconds']:7.1f} s  auc {r['auc']:.4f}", flush=True)
    names = list(seconds["full"])
    lines = [f"Fit seconds, one thread, back to back in one process; full data {args.full} (epochs x batch); "
             f"memory {args.memory.name}.", "",
             "| config | full (s) | " + " | ".join(f"{n} (s) | ratio" for n in recipes if n != "full") + " |",
             "|---|--:|" + "--:|--:|" * (len(recipes) - 1)]
    for c in names + ["zoo"]:
        full = sum(seconds["full"].values()) if c == "zoo" else seconds["full"][c]
        cells = []
        for n in recipes:
            if n != "full":
                mem = sum(seconds[n].values()) if c == "zoo" else seconds[n][c]
                cells.append(f"{mem:.1f} | {full / mem:.1f}x")
        lines.append(f"| {c} | {full:.1f} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "cost.md").write_text(text)
        (args.out / "cost.json").write_text(json.dumps(seconds, indent=1))


if __name__ == "__main__":
    main()
