"""The DIET benchmark's report: averaging over training seeds only where every run of every zoo entry is cached."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
spec = importlib.util.spec_from_file_location("_bench_diet_ranking", BENCHMARKS / "diet_ranking.py")
bench = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = bench
spec.loader.exec_module(bench)


def _runs(aucs: dict[str, float]) -> dict[str, dict[str, float]]:
    return {n: {"auc": a} for n, a in aucs.items()}


def test_averaged_agreement_waits_for_a_grown_zoo():
    full = {"a": 0.80, "b": 0.75, "c": 0.70}
    seed = {bench.full_key(0): _runs(full), bench.full_key(100): _runs(full),
            bench.memory_key("m", 0): {"random@0.01": {"entries": _runs({"a": 0.7, "b": 0.6, "c": 0.5})}},
            bench.memory_key("m", 100): {"random@0.01": {"entries": _runs({"a": 0.7, "b": 0.5, "c": 0.4})}}}
    out = bench.averaged_agreement({0: seed}, [0], "m", [0, 100], "random@0.01", ["a", "b", "c"])
    assert out is not None and out[0]["tau"] == 1.0  # means over the two runs: 0.7, 0.55, 0.45, as full data orders them
    # an entry added to the zoo and trained at offset 0 only: no average yet, rather than a KeyError
    seed[bench.full_key(0)]["d"] = {"auc": 0.65}
    seed[bench.full_key(100)]["d"] = {"auc": 0.65}
    seed[bench.memory_key("m", 0)]["random@0.01"]["entries"]["d"] = {"auc": 0.4}
    assert bench.averaged_agreement({0: seed}, [0], "m", [0, 100], "random@0.01", ["a", "b", "c", "d"]) is None
    seed[bench.memory_key("m", 100)]["random@0.01"]["entries"]["d"] = {"auc": 0.4}
    assert bench.averaged_agreement({0: seed}, [0], "m", [0, 100], "random@0.01", ["a", "b", "c", "d"]) is not None
