"""Which new chains does DIET's influence-aware addressing favour? (issue #8, a diagnostic)

For a built DIET memory (its saved stages), replays stage ``b``'s scoring the way
:func:`recsys.distill.diet.update` does it (the stage's outer sample and replay, a fresh proxy trained on the
memory, the last layer's TracIn dot products), with one simplification: the memory as stage ``b - 1`` left
it (``update`` scores after its outer steps moved the soft labels and weights, with the last of its fresh
proxies). It relates every new chain's score to its user's activity (chains of the user in the stream seen so far) and to whether the user
already has a slot, per main-label value: Spearman correlation, and the mean activity of the top 1%.

    .venv/bin/python benchmarks/diet_addressing.py --data PREPARED --memory MEMORY_DIR [--blocks 3 8 12]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from recsys.distill import influence
from recsys.distill.diet import DIETConfig, fresh_proxy, inner_loop, stage_generator
from recsys.distill.memory import Memory
from recsys.distill.stream import ChainStream


def _ranks(x: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(x, kind="stable"), kind="stable")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="the prepared dataset the memory was built on")
    ap.add_argument("--memory", required=True, type=Path, help="a DIET memory folder (with stages/)")
    ap.add_argument("--blocks", type=int, nargs="+", default=[3, 8, 12])
    ap.add_argument("--budget", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    config = DIETConfig(budget=args.budget, seed=args.seed)  # the memory's own settings (defaults otherwise)
    stream = ChainStream(args.data, block_days=config.block_days)
    users, x_all = stream.users, stream.inputs()
    for b in args.blocks:
        memory = Memory.load(args.memory / "stages" / f"stage_{b - 1:04d}.safetensors")
        gen = stage_generator(config.seed, b)  # the draws update() makes at stage b, in its order
        block = stream.block(b)
        outer_pos = block[torch.randperm(len(block), generator=gen)[: config.outer_samples].numpy()]
        earlier = int(stream.bounds[b])
        replay = torch.randint(0, earlier, (min(config.replay, earlier),), generator=gen).numpy()
        outer_x = x_all.take(np.concatenate([outer_pos, replay]))
        w = torch.nn.functional.softplus(memory.weight_logits)
        theta = inner_loop(fresh_proxy(stream, config, gen), x_all.take(memory.positions), memory.soft_labels,
                           w / w.mean(), config.inner_steps, config.inner_lr, config.unroll)
        theta = {k: t.detach() for k, t in theta.items()}
        gradient = influence.last_layer_gradient(theta, outer_x, outer_x.labels)
        new_x = x_all.take(block)
        scores = influence.dot_with(theta, new_x, new_x.labels, gradient).numpy()
        activity = np.bincount(users[: int(stream.bounds[b + 1])], minlength=int(users.max()) + 1)[users[block]]
        has_slot = np.isin(users[block], users[memory.positions.numpy()])
        label = new_x.labels[:, stream.main].numpy()
        for value in (0, 1):
            s, a, h = scores[label == value], activity[label == value], has_slot[label == value]
            top = np.argsort(-s)[: max(len(s) // 100, 5)]
            rho = np.corrcoef(_ranks(s), _ranks(a))[0, 1]
            print(f"block {b}, {stream.main_label} = {value}: {len(s)} chains; Spearman(score, user activity) "
                  f"{rho:+.3f}; top 1%: user activity {a[top].mean():.1f} (all {a.mean():.1f}), "
                  f"user has a slot {h[top].mean():.2f} (all {h.mean():.2f})", flush=True)


if __name__ == "__main__":
    main()
