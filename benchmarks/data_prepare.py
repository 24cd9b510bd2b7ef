"""Benchmark of ``recsys data prepare``: speed, peak memory, equality with a pandas reference, streaming.

    .venv/bin/python benchmarks/data_prepare.py [--rows 10000000] [--repeats 5] [--stream-rows 10000000 40000000]
        [--work DIR]

1. Generates a synthetic Tmall IJCAI-15 log of ``--rows`` rows (``recsys.data.synth``; ~25 bytes a row) once
   into ``--work`` (default ``benchmarks/_work/``, git-ignored) and reuses it on later runs.
2. Runs ``recsys`` ``prepare`` and the pandas reference (``benchmarks/pandas_reference.py``) on it, each in a
   fresh subprocess, so the peak RSS (``VmHWM`` of the child) is that pipeline's alone. The child times
   the pipeline call (read CSV -> Parquet written); the parent times the whole process (imports included).
   ``--repeats`` rounds, each running every pipeline once in turn; each pipeline's median run is reported.
3. Checks the two outputs are equal (events with every column and the row order, sequences, items, users,
   vocabularies, manifest counts), with polars ``DataFrame.equals``.
4. Streaming: generates KuaiRand-Pure-format logs of each ``--stream-rows`` size (27,285 users, more rows
   per user and day) and runs ``prepare`` on each in a fresh subprocess: peak RSS should not grow with
   the log (a bucketed, streamed pass).
5. Prints a markdown report (figures, targets, machine) and writes it to ``WORK/data_prepare.md``.

Exits 1 when the outputs differ or a pipeline fails; missed performance targets are reported, not fatal.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TMALL_LOG = "user_log_format1.csv"
TMALL_INFO = "user_info_format1.csv"
KUAIRAND_USERS = 27_285  # the Pure release's users; logs grow by rows per user and day

TARGETS = {
    "rows_per_s": 2_000_000,  # recsys, end to end
    "rss_over_csv": 4.0,  # peak RSS / CSV size
    "speedup": 5.0,  # recsys vs the pandas reference
    "stream_rss_ratio": 1.3,  # peak RSS of the largest vs the smallest streamed log
}


# ---------------------------------------------------------------------------------------------------------
# Synthetic data
# ---------------------------------------------------------------------------------------------------------


def _project_synth() -> Any | None:
    """``recsys.data.synth`` when importable (it is being developed alongside), else ``None``."""
    try:
        import recsys.data.synth as synth

        synth.synthesize  # noqa: B018
        return synth
    except Exception:  # noqa: BLE001 - any failure: fall back to the minimal writer below
        return None


def ensure_tmall(work: Path, rows: int, seed: int, log=print) -> tuple[Path, dict[str, Any]]:
    """The folder of a synthetic Tmall dataset of about ``rows`` log rows (generated once, then reused)."""
    raw = work / f"tmall-{_size_tag(rows)}-s{seed}"
    info_path = raw.with_name(raw.name + ".json")
    if (raw / TMALL_LOG).exists() and info_path.exists():
        return raw, json.loads(info_path.read_text())
    shutil.rmtree(raw, ignore_errors=True)
    started = time.perf_counter()
    synth = _project_synth()
    if synth is not None:
        # Sizes scaled from the real release (54.9M rows, 424,170 users, 1,090,390 items).
        from recsys.data import schemas

        per_user = synth.make_config("tmall", users=1, items=1000, seed=seed).expected_rows()
        users = max(1, round(rows / per_user))
        items = max(1000, round(rows * schemas.TMALL_ITEMS / schemas.TMALL_ROWS))
        log(f"generating a synthetic Tmall log (~{rows:,} rows: {users:,} users, {items:,} items) in {raw} ...")
        report = synth.synthesize("tmall", raw, users=users, items=items, seed=seed, overwrite=True)
        info = {"generator": "recsys.data.synth", "users": users, "items": items, "rows": report.files[TMALL_LOG]}
    else:
        log(f"recsys.data.synth is not importable: writing a minimal Tmall log of {rows:,} rows in {raw} ...")
        tmp = raw.with_name(raw.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        info = {"generator": "benchmarks/data_prepare.py:write_tmall_minimal",
                **write_tmall_minimal(tmp, rows, seed=seed)}
        os.replace(tmp, raw)
    info["seconds"] = round(time.perf_counter() - started, 1)
    info["csv_bytes"] = (raw / TMALL_LOG).stat().st_size
    info_path.write_text(json.dumps(info, indent=2) + "\n")
    return raw, info


def ensure_kuairand(work: Path, rows: int, seed: int, log=print) -> tuple[Path, dict[str, Any]]:
    """The folder of a synthetic KuaiRand-Pure dataset of about ``rows`` log rows (all three logs)."""
    synth = _project_synth()
    raw = work / f"kuairand-pure-{_size_tag(rows)}-s{seed}"
    info_path = raw.with_name(raw.name + ".json")
    if raw.is_dir() and info_path.exists():
        return raw, json.loads(info_path.read_text())
    if synth is None:
        raise RuntimeError("the streaming benchmark needs recsys.data.synth (KuaiRand generator) to be importable")
    shutil.rmtree(raw, ignore_errors=True)
    # Rows grow linearly with rows_per_user_day (standard logs); the random log is fixed by the users.
    one = _expected(synth.make_config("kuairand-pure", users=KUAIRAND_USERS, seed=seed, rows_per_user_day=1.0))
    zero = _expected(synth.make_config("kuairand-pure", users=KUAIRAND_USERS, seed=seed, rows_per_user_day=0.0))
    per_unit = one["standard"] - zero["standard"]
    rpud = max(0.1, (rows - zero["standard"] - zero["random"]) / per_unit)
    log(f"generating a synthetic KuaiRand-Pure log (~{rows:,} rows: {KUAIRAND_USERS:,} users, "
        f"{rpud:.1f} rows per user and day) in {raw} ...")
    started = time.perf_counter()
    report = synth.synthesize("kuairand-pure", raw, users=KUAIRAND_USERS, seed=seed, rows_per_user_day=rpud,
                              overwrite=True)
    info = {"generator": "recsys.data.synth", "users": KUAIRAND_USERS, "rows_per_user_day": round(rpud, 3),
            "rows": report.log_rows, "seconds": round(time.perf_counter() - started, 1),
            "csv_bytes": sum((raw / n).stat().st_size for n in report.files if n.startswith("log_"))}
    info_path.write_text(json.dumps(info, indent=2) + "\n")
    return raw, info


def _expected(cfg: Any) -> dict[str, float]:
    e = cfg.expected_rows()
    return e if isinstance(e, dict) else {"standard": float(e), "random": 0.0}


def _size_tag(rows: int) -> str:
    for unit, n in (("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if rows >= n and rows % n == 0:
            return f"{rows // n}{unit}"
    return str(rows)


def write_tmall_minimal(
    out: Path,
    rows: int,
    *,
    seed: int = 0,
    users: int | None = None,
    items: int | None = None,
    zero_pad: bool = False,
    null_text: str = "",
    side_noise: float = 0.0,
    duplicate_rate: float = 0.1,
) -> dict[str, Any]:
    """Write ``user_log_format1.csv`` and ``user_info_format1.csv`` of the exact IJCAI-15 format into ``out``.

    A minimal stand-in for the project generator: Zipf item popularity, sparse raw ids, the 186 days up
    to 11-11 (a Double 11 peak), the real action mix, ``brand_id`` missing for some items (``null_text``:
    ``""`` or ``"NULL"``, ``"mixed"`` for both), exact duplicate rows, rows grouped by user (users in a
    random order) and shuffled within the user. ``side_noise`` is the fraction of rows whose category,
    seller or brand differ from the item's usual one (the prepared item takes the minimum). user_info
    holds the log's users, some users without events, some repeated users and empty fields.
    """
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    users = users or max(1, rows // 130)
    items = items or max(50, rows // 50)
    user_ids = rng.choice(np.arange(1, 3 * users + 1), users, replace=False)
    item_ids = rng.choice(np.arange(1, 2 * items + 1), items, replace=False)
    n_cat, n_seller = max(5, items // 600), max(10, items // 200)
    item_cat = rng.integers(1, n_cat + 1, items)
    item_seller = rng.integers(1, n_seller + 1, items)
    item_brand = np.where(rng.random(items) < 0.02, 0, item_seller * 3 + rng.integers(0, 3, items))
    popularity = 1.0 / np.arange(1, items + 1) ** 0.9
    popularity = np.cumsum(rng.permutation(popularity))
    popularity /= popularity[-1]
    first = date(2014, 11, 11) - timedelta(days=185)
    days = np.array([int((first + timedelta(days=d)).strftime("%m%d")) for d in range(186)])
    day_weight = np.ones(186)
    day_weight[-1] = 30.0
    day_cum = np.cumsum(day_weight) / day_weight.sum()
    activity = rng.lognormal(0.0, 1.0, users)
    per_user = rng.poisson(activity / activity.sum() * rows * (1 - duplicate_rate / (1 + duplicate_rate)))
    per_user[per_user == 0] = 1
    user_order = rng.permutation(users)
    path = out / TMALL_LOG
    written = 0
    with path.open("wb") as f:
        f.write(b"user_id,item_id,cat_id,seller_id,brand_id,time_stamp,action_type\n")
        chunk = max(1, users // max(1, rows // 1_000_000))
        for lo in range(0, users, chunk):
            us = user_order[lo:lo + chunk]
            n = per_user[us]
            u = np.repeat(us, n)
            m = u.size
            it = np.minimum(np.searchsorted(popularity, rng.random(m)), items - 1)
            day = np.minimum(np.searchsorted(day_cum, rng.random(m)), 185)
            action = np.searchsorted([0.884, 0.8854, 0.945], rng.random(m), side="right")
            action = np.array([0, 1, 2, 3])[action]
            dup = rng.random(m) < duplicate_rate
            u, it, day, action = (np.concatenate([a, a[dup]]) for a in (u, it, day, action))
            cat, seller, brand = item_cat[it], item_seller[it], item_brand[it].copy()
            if side_noise:
                for col, hi in ((cat, n_cat), (seller, n_seller), (brand, 3 * n_seller + 3)):
                    noisy = rng.random(col.size) < side_noise
                    col[noisy] = rng.integers(1, hi + 1, int(noisy.sum()))
            order = np.lexsort((rng.random(u.size), u))
            frame = pl.DataFrame({
                "user_id": user_ids[u[order]], "item_id": item_ids[it[order]], "cat_id": cat[order],
                "seller_id": seller[order], "brand_id": brand[order], "time_stamp": days[day[order]],
                "action_type": action[order],
            })
            texts = {"brand_id": pl.when(pl.col("brand_id") > 0).then(pl.col("brand_id").cast(pl.String))}
            if null_text == "mixed":
                texts["brand_id"] = texts["brand_id"].when(pl.int_range(pl.len()) % 2 == 0).then(pl.lit("NULL"))
            elif null_text:
                texts["brand_id"] = texts["brand_id"].otherwise(pl.lit(null_text))
            if zero_pad:
                texts["time_stamp"] = pl.col("time_stamp").cast(pl.String).str.zfill(4)
            frame = frame.with_columns(**{k: v for k, v in texts.items()})
            frame.write_csv(f, include_header=False, null_value="")
            written += frame.height
    # user_info: every log user, 5% extra users without events, 1% repeated rows, some empty fields.
    extra = np.setdiff1d(np.arange(1, 4 * users + 1), user_ids)[: max(1, users // 20)]
    info_users = np.concatenate([user_ids, extra, user_ids[: max(1, users // 100)]])
    k = info_users.size
    age = rng.integers(0, 9, k).astype(float)
    gender = rng.integers(0, 3, k).astype(float)
    age[rng.random(k) < 0.05] = np.nan
    gender[rng.random(k) < 0.05] = np.nan
    pl.DataFrame({"user_id": info_users, "age_range": age, "gender": gender}).with_columns(
        pl.col("age_range", "gender").fill_nan(None).cast(pl.Int64)
    ).write_csv(out / TMALL_INFO)
    return {"users": users, "items": items, "rows": written}


# ---------------------------------------------------------------------------------------------------------
# One pipeline in a fresh process
# ---------------------------------------------------------------------------------------------------------


def child(kind: str, raw: Path, out: Path, result: Path) -> None:
    """Run one pipeline (``recsys-tmall``, ``pandas-tmall``, ``recsys-kuairand-pure``) and write its figures."""
    if kind.startswith("pandas-tmall"):
        sys.path.insert(0, str(HERE))
        import pandas_reference

        cpu0 = _cpu_seconds()
        started = time.perf_counter()
        summary = pandas_reference.prepare_tmall(raw, out, sequences="offsets" if kind.endswith("tuned") else "groupby")
        seconds = time.perf_counter() - started
        rows, buckets = summary["rows"], summary["extra"]["buckets"]
    else:
        from recsys.data.prepare import PrepareOptions, make_source, prepare

        dataset = kind.removeprefix("recsys-")
        cpu0 = _cpu_seconds()
        started = time.perf_counter()
        manifest = prepare(make_source(dataset, raw), out, PrepareOptions(), force=True, log=lambda _m: None)
        seconds = time.perf_counter() - started
        rows, buckets = manifest.rows, manifest.extra.get("buckets")
    result.write_text(json.dumps({
        "seconds": seconds,
        "cpu_seconds": _cpu_seconds() - cpu0,
        "max_rss_bytes": peak_rss(),
        "ru_maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # for reference only
        "rows": rows,
        "buckets": buckets,
    }))


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss() -> int:
    """Peak resident set size of this process in bytes.

    ``VmHWM`` of ``/proc/self/status``, the high-water mark of this process image alone. ``ru_maxrss`` of
    ``RUSAGE_SELF`` is only the fallback: Linux carries it over from the parent through fork and execve,
    so a child started by a large parent would report at least the parent's RSS.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def run_child(kind: str, raw: Path, out: Path, log=print) -> dict[str, Any]:
    result = out.with_name(out.name + ".result.json")
    result.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, str(raw), str(out), str(result)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0 or not result.exists():
        raise RuntimeError(f"{kind} failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    figures = json.loads(result.read_text())
    figures["process_wall_s"] = wall
    log(f"  {kind}: {figures['seconds']:.2f} s (process {wall:.2f} s), peak RSS "
        f"{figures['max_rss_bytes'] / 2**20:,.0f} MB")
    return figures


def _median_run(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median pipeline time (the lower middle one of an even count), with every run's time
    and the largest peak RSS of them all."""
    ordered = sorted(results, key=lambda r: r["seconds"])
    median = dict(ordered[(len(ordered) - 1) // 2])
    median["all_seconds"] = [r["seconds"] for r in results]
    median["max_rss_bytes"] = max(r["max_rss_bytes"] for r in results)
    return median


# ---------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    import numpy
    import pandas
    import polars
    import pyarrow

    import recsys

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram = f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu,
        "cores": f"{cores} (of {os.cpu_count()} online)",
        "ram": ram,
        "os": platform.platform(),
        "python": platform.python_version(),
        "polars": polars.__version__,
        "pandas": pandas.__version__,
        "pyarrow": pyarrow.__version__,
        "numpy": numpy.__version__,
        "recsys": recsys.__version__,
    }


def _mb(n: float) -> str:
    return f"{n / 2**20:,.0f}"


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def report(args: argparse.Namespace, tmall: dict[str, Any], runs: dict[str, dict[str, Any]],
           problems: list[str] | None, streams: list[dict[str, Any]], load_before: str) -> tuple[str, bool]:
    lines = [f"# `recsys data prepare` benchmark ({date.today().isoformat()})", ""]
    cmd = " ".join([".venv/bin/python", "benchmarks/data_prepare.py", *sys.argv[1:]])
    lines += [f"Command: `{cmd}`", ""]
    csv = tmall["csv_bytes"]
    lines += [
        f"## Tmall IJCAI-15 format: {tmall['rows']:,} log rows, CSV {csv / 1e6:,.0f} MB "
        f"({tmall['users']:,} users, {tmall['items']:,} items; generator {tmall['generator']})",
        "",
        "| pipeline | seconds | rows/s | CPU s | process wall s (with imports) | peak RSS MB | peak RSS / CSV | buckets | events |",
        "| :-- | --: | --: | --: | --: | --: | --: | --: | --: |",
    ]
    for name, r in runs.items():
        lines.append(
            f"| {name} | {r['seconds']:.2f} | {tmall['rows'] / r['seconds'] / 1e6:.2f}M | {r['cpu_seconds']:.2f} "
            f"| {r['process_wall_s']:.2f} "
            f"| {_mb(r['max_rss_bytes'])} | {r['max_rss_bytes'] / csv:.2f}x | {r['buckets']} | {r['rows']['events']:,} |"
        )
    lines.append("")
    if any(len(r["all_seconds"]) > 1 for r in runs.values()):
        lines += [f"Seconds are the median of {len(next(iter(runs.values()))['all_seconds'])} runs each, in rounds "
                  "(one run of each pipeline per round), and peak RSS the largest; every run, in order: "
                  + "; ".join(f"{name} " + ", ".join(f"{t:.2f}" for t in r["all_seconds"]) for name, r in runs.items())
                  + ".", ""]
    rec = runs.get("recsys")
    pd_run = runs.get("pandas reference")
    speedup = pd_run["seconds"] / rec["seconds"] if rec and pd_run else None
    wall_speedup = pd_run["process_wall_s"] / rec["process_wall_s"] if rec and pd_run else None
    if speedup is not None:
        lines += [f"recsys is **{speedup:.1f}x** faster than the pandas reference (pipeline call; "
                  f"{wall_speedup:.1f}x on process wall time with imports)."]
        tuned = runs.get("pandas, tuned sequences")
        if tuned:
            lines += [f"Against the tuned variant (sequences from offsets with pyarrow instead of "
                      f"`groupby().agg(list)`): **{tuned['seconds'] / rec['seconds']:.1f}x**."]
        lines.append("")
    if problems is None:
        lines += ["Outputs: not compared (pandas reference skipped).", ""]
    elif problems:
        lines += ["Outputs: **DIFFER**:", "", *(f"- {p}" for p in problems[:20]), ""]
    else:
        lines += ["Outputs: **equal** (events: all columns and row order; sequences; items; users; "
                  "every vocabulary; manifest row counts, vocabulary sizes, split counts, events per day).", ""]

    ratio = None
    if streams:
        lines += [
            "## Streaming: KuaiRand-Pure format (three logs, 19 columns)",
            "",
            "| log rows | CSV MB | users | buckets | seconds | rows/s | CPU s | peak RSS MB | peak RSS / CSV |",
            "| --: | --: | --: | --: | --: | --: | --: | --: | --: |",
        ]
        for s in streams:
            r = s["run"]
            lines.append(
                f"| {s['rows']:,} | {s['csv_bytes'] / 1e6:,.0f} | {s['users']:,} | {r['buckets']} | {r['seconds']:.2f} "
                f"| {s['rows'] / r['seconds'] / 1e6:.2f}M | {r['cpu_seconds']:.2f} | {_mb(r['max_rss_bytes'])} "
                f"| {r['max_rss_bytes'] / s['csv_bytes']:.2f}x |"
            )
        rss = [s["run"]["max_rss_bytes"] for s in streams]
        if len(rss) > 1:
            ratio = max(rss) / min(rss)
            lines += ["", f"Peak RSS ratio, largest / smallest log: **{ratio:.2f}**"]
        lines.append("")

    lines += ["## Targets", "", "| target | measured | met |", "| :-- | --: | :-: |"]
    met: dict[str, bool] = {}
    if rec:
        rps = tmall["rows"] / rec["seconds"]
        met["rate"] = rps >= TARGETS["rows_per_s"]
        lines.append(f"| recsys >= {TARGETS['rows_per_s'] / 1e6:.0f}M rows/s end to end | {rps / 1e6:.2f}M | {_yes(met['rate'])} |")
        over = rec["max_rss_bytes"] / csv
        met["rss"] = over <= TARGETS["rss_over_csv"]
        lines.append(f"| recsys peak RSS <= {TARGETS['rss_over_csv']:.0f}x the CSV size | {over:.2f}x | {_yes(met['rss'])} |")
    if speedup is not None:
        met["speedup"] = speedup >= TARGETS["speedup"]
        lines.append(f"| >= {TARGETS['speedup']:.0f}x faster than the pandas reference | {speedup:.1f}x | {_yes(met['speedup'])} |")
    if ratio is not None:
        met["stream"] = ratio <= TARGETS["stream_rss_ratio"]
        lines.append(f"| streaming peak RSS ratio <= {TARGETS['stream_rss_ratio']} | {ratio:.2f} | {_yes(met['stream'])} |")
    if problems is not None:
        lines.append(f"| outputs equal to the pandas reference | {'equal' if not problems else 'differ'} | {_yes(not problems)} |")
    lines.append("")

    about = {**machine(), "load average (1, 5, 15 min) before / after": f"{load_before} / {load_average()}"}
    lines += ["## Machine", "", "| | |", "| :-- | :-- |", *(f"| {k} | {v} |" for k, v in about.items()), ""]
    lines += [
        "Notes: each pipeline runs in its own fresh process; seconds are the pipeline call (read CSV -> Parquet "
        "written, the manifest's sha256 of the inputs included for recsys); peak RSS is the child's "
        "`VmHWM` (imports included); CPU s is the child's user + system time over the pipeline call (all "
        "threads); the CSV is in the page cache (just generated or read before); CSV size is the interaction "
        "log(s) only. Wall times on a shared machine depend on its load (see the load average).",
        "",
    ]
    return "\n".join(lines), not problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark of recsys data prepare (see the module docstring).")
    parser.add_argument("--rows", type=int, default=10_000_000, help="Tmall log rows (default 10M)")
    parser.add_argument("--stream-rows", type=int, nargs="*", default=[10_000_000, 40_000_000],
                        help="KuaiRand log sizes of the streaming check (default 10M 40M; none: skip)")
    parser.add_argument("--work", type=Path, default=HERE / "_work", help="work folder (default benchmarks/_work)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=5,
                        help="rounds of the Tmall pipelines, each running once per round (default 5; medians reported)")
    parser.add_argument("--skip-pandas", action="store_true", help="do not run the pandas reference")
    parser.add_argument("--child", nargs=4, metavar=("KIND", "RAW", "OUT", "RESULT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, raw, out, result = args.child
        child(kind, Path(raw), Path(out), Path(result))
        return 0

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    load_before = load_average()
    raw, tmall = ensure_tmall(work, args.rows, args.seed)
    print(f"Tmall: {tmall['rows']:,} rows, {tmall['csv_bytes'] / 1e6:,.0f} MB in {raw}")
    pipelines = {"recsys": "recsys-tmall"}
    if not args.skip_pandas:
        pipelines |= {"pandas reference": "pandas-tmall", "pandas, tuned sequences": "pandas-tmall-tuned"}
    # Rounds of one run of each pipeline in turn, so that a slow spell of the machine hits all of them;
    # each pipeline's figures are those of its median run.
    every: dict[str, list[dict[str, Any]]] = {name: [] for name in pipelines}
    for _ in range(args.repeats):
        for name, kind in pipelines.items():
            every[name].append(run_child(kind, raw, work / f"out-{kind}"))
    runs = {name: _median_run(results) for name, results in every.items()}
    problems: list[str] | None = None
    if not args.skip_pandas:
        sys.path.insert(0, str(HERE))
        from pandas_reference import compare_prepared

        problems = compare_prepared(work / "out-recsys-tmall", work / "out-pandas-tmall")
        problems += compare_prepared(work / "out-recsys-tmall", work / "out-pandas-tmall-tuned")
        print("  outputs equal" if not problems else "  OUTPUTS DIFFER:\n    " + "\n    ".join(problems))

    streams = []
    for rows in args.stream_rows:
        kraw, info = ensure_kuairand(work, rows, args.seed)
        print(f"KuaiRand-Pure: {info['rows']:,} rows, {info['csv_bytes'] / 1e6:,.0f} MB in {kraw}")
        out = work / f"out-recsys-{kraw.name}"
        streams.append({**info, "run": run_child("recsys-kuairand-pure", kraw, out)})
        shutil.rmtree(out, ignore_errors=True)  # large; only the figures matter

    text, ok = report(args, tmall, runs, problems, streams, load_before)
    print()
    print(text)
    (work / "data_prepare.md").write_text(text)
    print(f"(written to {work / 'data_prepare.md'})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
