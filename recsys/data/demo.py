"""A synthetic dataset, prepared, for the quickstart and the benchmarks: made once, reused afterwards."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from recsys.data.manifest import Manifest
from recsys.data.prepare import make_source, prepare
from recsys.data.synth import synthesize


def demo_dataset(
    out: Path,
    *,
    dataset: str = "kuairand-pure",
    users: int = 5000,
    items: int = 3000,
    seed: int = 0,
    log: Callable[[str], None] = print,
    **overrides: float,
) -> tuple[Path, Manifest]:
    """Synthesize ``dataset`` under ``out/raw-...`` (unless already there) and prepare it into
    ``out/prepared-...``; returns the prepared folder and its manifest. ``overrides`` go to the
    generator's config (e.g. ``rows_per_user_day``) and into the folder names."""
    out = Path(out)
    tag = f"{dataset}-u{users}-i{items}-s{seed}" + "".join(f"-{k}{v}" for k, v in sorted(overrides.items()))
    raw = out / f"raw-{tag}"
    if not raw.is_dir():  # written atomically by synthesize: present means complete
        report = synthesize(dataset, raw, users=users, items=items, seed=seed, **overrides)
        log(f"synthesized {report.log_rows:,} log rows in {report.seconds:.1f} s -> {raw}")
    prepared = out / f"prepared-{tag}"
    manifest = prepare(make_source(dataset, raw), prepared, log=lambda m: None)
    return prepared, manifest
