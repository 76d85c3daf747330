#!/usr/bin/env python3
"""Runs the benchmark suite of issue 5 (and issue 17's parallel gzip) and
regenerates docs/benchmarks.md and docs/benchmarks.svg from what it measured.

    python3 scripts/bench-report.py                # build, run every bench and the memory runs, write the docs
    python3 scripts/bench-report.py --bench uneven # rerun one bench (repeatable), keep the others' results
    python3 scripts/bench-report.py --wait-idle 600 --retries 2  # on a shared machine
    python3 scripts/bench-report.py --no-bench --no-memory  # only rewrite the docs from the last results
    PARAPIPE_BENCH_THREADS=16 python3 scripts/bench-report.py  # on a 16-core machine: 16 threads per parallel variant

It honours CARGO_TARGET_DIR (criterion writes to <target dir>/criterion).
Before a bench runs, its groups' old criterion results are deleted, so a
report never mixes in a variant that no longer exists. What criterion does
not keep (load averages, memory peaks) is kept in <target dir>/bench-report/
run.json beside the benches' logs. Every number in the
generated files comes from this run (or, with --no-bench, from the last
one); the targets are issue 5's and issue 17's. Standard library only.
The pgzip bench needs pigz (installed with apt-get when it is missing) and
gzip (to check the example's output).
"""

import argparse
import datetime
import html
import json
import math
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Workloads, in the order of issue 5: (bench file, criterion group, title,
# item count label, what the group measures). The baseline is the variant
# the speed-ups are relative to.
GROUPS = [
    ("overhead", "one_stage_2_workers", "1a. Overhead: one stage, 2 workers",
     "1,000,000 `u64` through `x + 1`; `*_ordered` variants deliver in input order."),
    ("overhead", "three_stage_chain", "1b. Overhead: 3-stage chain",
     "1,000,000 `u64` through three `x + 1` stages, one worker (thread) each."),
    ("overhead", "twenty_stage_chain", "1c. Overhead: 20-stage chain, parallel",
     "1,000,000 `u64` through twenty `x + 1` stages, one worker (thread) each."),
    ("serial", "serial_20_stages", "1d. Overhead: 20-stage chain, serial",
     "1,000,000 `u64` through twenty `x + 1` stages fused in the calling thread, "
     "against the same hand-written iterator chain."),
    ("overhead", "chain_growth", "1e. Overhead: a naive chain growing from 1 to 5 stages",
     "1,000,000 `u64` through one and through five `x + 1` stages, default settings (one worker "
     "each), beside rayon's `par_bridge` over the same five steps (issue 17, target 3)."),
    ("granularity", "granularity", "2. Granularity",
     "100,000 items, `fib(k)` per item, one stage with 2 workers."),
    ("mandelbrot", "mandelbrot", "3. Mandelbrot, rows in order",
     "1000 x 1000 points, at most 2,000 iterations, one row per item, "
     "rows delivered in order and compared with the sequential ones."),
    ("uneven", "uneven_stages", "4a. Uneven stages",
     "Five stages costing fib(12), fib(14), fib(13), fib(12), fib(12) per item."),
    ("uneven", "uneven_stages_heavy", "4b. Uneven stages, heavy",
     "Five stages costing fib(17), fib(19), fib(18), fib(17), fib(17) per item."),
    ("async_io", "async_timer", "6a. Async stages: a 10 ms timer per item",
     "10,000 items whose future awaits a 10 ms tokio timer, 500 in flight: the physical limit "
     "is 200 ms. Speed-ups are relative to `buffer_unordered(500)` on tokio; `parapipe` starts "
     "its own runtime every run, `parapipe_on_runtime` is given one."),
    ("async_io", "async_overhead", "6b. Async stages: per-item overhead",
     "100,000 items through a future that returns at once, 256 in flight (a thread map stage "
     "with 2 workers beside them). Speed-ups are relative to `buffer_unordered(256)` on tokio."),
    ("async_io", "async_fetch", "6c. Async stages: fetching 400 pages over HTTP",
     "The workload of `examples/fetch.rs`: 400 pages from a hyper server on loopback, 50 ms "
     "per request, 100 in flight, reqwest as the client, titles pulled out of the pages. The "
     "limit is 200 ms. Speed-ups are relative to a tokio + reqwest + `buffer_unordered(100)` program."),
    ("pgzip", "pgzip", "7. Parallel gzip of a real 153 MB file",
     "The work of `examples/pgzip.rs` (issue 17): the toolchain's largest `librustc_driver-*.so` "
     "compressed at level 6 in 128 KiB chunks into one gzip member. `parapipe` (2 workers) reads "
     "the file as it goes; `rayon` (`par_chunks` on 2 threads, every output collected before "
     "writing) and `single` (flate2's `GzEncoder`, one thread) work on the file loaded into "
     "memory once; `pigz_p2` is `pigz -p 2 -6` as a process. Speed-ups are relative to `single`."),
    ("small_runs", "small_runs", "8. Small runs: 3 stages over 100 items",
     "A 3-stage pipeline of cheap steps (default settings) over 100 items, run again and again: "
     "`parapipe` starts its threads for each run, `parapipe_threads` runs on a `Threads` set kept "
     "between runs; rayon's `par_iter` does the same three steps on a pool started once "
     "(issue 17, target 4)."),
    ("io_workers", "io_workers", "9. Thousands of workers doing blocking IO",
     "5,000 items that each wait 50 ms (`thread::sleep`, a blocking request) through a map stage "
     "of `W` workers, against `W` hand-written threads taking items from a shared counter; whole "
     "runs, thread start-up included. CPU time is the process's user + system time per run, "
     "read from `/proc/self/stat` (10 ms ticks) (issue 17, target 4b)."),
    ("profiler", "profiler", "10. The profiler's cost",
     "100,000 items of `fib(15)` (about 1.5 µs each) through a map stage (`map_*`) and an "
     "iterator stage (`iter_*`), 2 workers, unprofiled (`off`), profiled in memory and "
     "profiled into a database (samples every 100 ms). The target: profiled at most 10% "
     "slower than unprofiled."),
    ("graphs", "keyed_wordcount", "11. Keyed word count over the package index",
     "The words of the Debian package index (apt's lists, about 50 MB of real text) counted per "
     "word (issue 18). `sequential` is a plain loop into one map; `rayon_fold_reduce` folds "
     "`par_lines` into a map per task and merges them with `reduce`; the pipelines split 64 KiB "
     "blocks of lines into words on 2 workers and count them on `k` workers keyed by word "
     "(`partition_by`: disjoint maps, no merge), or on one worker (`parapipe_one_counter`)."),
    ("graphs", "fanout", "12. Fan-out and fan-in: what a fork or a merge costs",
     "1,000,000 integers: one `plain` pipeline (source to consumer), a `tee` into 2 branches read "
     "at once (every item to each), a `split` into 2 branches, a `tee` whose 2 branches are "
     "`zip`ped back into pairs, and a `merge` of 2 pipelines of 500,000 items. Speed-ups are "
     "relative to `plain`; divide the time by 1,000,000 for the cost per item."),
    ("graphs", "keyed_order", "13. Keyed stages in order: what order across keys costs",
     "1,000,000 integers through a map stage on 2 workers: `plain` (unkeyed, unordered), "
     "`ordered`, `keyed` (`partition_by(x % 1024)`) and `keyed_ordered` (both: the router numbers "
     "each run of consecutive items that go to one worker, about 2 items here, and the reorder "
     "step puts the runs back in order). Speed-ups are relative to `plain`."),
]
BENCHES = ["overhead", "serial", "granularity", "mandelbrot", "uneven", "async_io", "pgzip",
           "small_runs", "io_workers", "profiler", "graphs"]
# Groups a bench writes that are shown inside another group's section.
EXTRA_GROUPS = {"io_workers": ["io_workers_cpu"]}
BASELINES = ("sequential", "hand_written_chain", "buffer_unordered", "single", "plain")
# Every cargo call builds with these, so that no bench rebuilds the crate
# with other features (the async bench needs `async`; it changes nothing in
# the code the other benches run).
FEATURES = ["--features", "async"]

# Workload 5: item counts and modes of examples/memory.rs.
MEMORY_COUNTS = [1_000_000, 10_000_000]
MEMORY_MODES = ["sequential", "bounded", "unbounded", "async"]
# "Flat (within a few MB)": read as at most this much growth.
MEMORY_FLAT_KB = 5 * 1024

# Workload 7 (issue 17): examples/pgzip.rs as it is, and its `--rayon` variant,
# each run once for its peak memory; issue 17's limit on it, in bytes.
PGZIP_MODES = {"parapipe": [], "rayon": ["--rayon"]}
PGZIP_PEAK_LIMIT = 32_000_000


def sh(cmd, **kw):
    return subprocess.run(cmd, cwd=ROOT, check=True, text=True, capture_output=True, **kw).stdout


def loadavg():
    with open("/proc/loadavg") as f:
        return tuple(float(x) for x in f.read().split()[:3])


def fmt_load(load):
    return " / ".join(f"{x:.2f}" for x in load)


def fmt_share(share):
    return "-" if share is None else f"{100 * share:.0f}%"


def machine():
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "rustc": sh(["rustc", "--version"]).strip(),
        "kernel": f"{platform.system()} {platform.release()}",
    }


def measured_commit():
    """The last commit that changed what the benches measure (anything but
    docs/, scripts/ and README.md), and whether that is changed in the tree."""
    outside = ["--", ".", ":!docs", ":!scripts", ":!README.md"]
    try:
        commit = sh(["git", "log", "-1", "--format=%h"] + outside).strip()
        dirty = sh(["git", "status", "--porcelain", "--untracked-files=no"] + outside).strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"
    return commit + (" (with uncommitted changes)" if dirty else "")


def target_dir():
    meta = json.loads(sh(["cargo", "metadata", "--format-version", "1", "--no-deps"]))
    return Path(meta["target_directory"])


def busy_seconds():
    """CPU time the whole machine has spent busy since boot, in seconds."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_seconds():
    """CPU time used by this script's finished children (cargo, the benches)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def others_share(busy_before, own_before, wall):
    """Share of the machine's cores that other processes kept busy over a
    span of `wall` seconds: all busy time less this script's children."""
    others = (busy_seconds() - busy_before) - (own_seconds() - own_before)
    return max(0.0, others / (wall * os.cpu_count()))


# Other processes' share of the cores above which a bench's run counts as
# disturbed (and, with --retries, is run again).
BUSY = 0.10


def wait_idle(max_wait, threshold=BUSY, window=15.0):
    """Waits, at most max_wait seconds, until other processes use less than
    `threshold` of the cores over a `window`; returns the seconds waited and
    the share last seen."""
    start = time.time()
    while True:
        busy = busy_seconds()
        time.sleep(window)
        share = (busy_seconds() - busy) / (window * os.cpu_count())
        if share < threshold or time.time() - start >= max_wait:
            return time.time() - start, share


def run_benches(names, criterion, logs, max_wait, retries):
    """Builds, then runs each bench in turn (first waiting up to max_wait
    seconds for the machine to be idle, and running it again, up to
    `retries` times, while other processes took more than BUSY of the cores
    during the run); returns what each bench's last run saw of the machine."""
    print("building the benches ...", file=sys.stderr)
    subprocess.run(["cargo", "bench", "--benches", "--no-run"] + FEATURES, cwd=ROOT, check=True)
    runs = []
    for name in names:
        for _ in range(retries + 1):
            run = run_bench(name, criterion, logs, max_wait)
            print(f"  others used {fmt_share(run['others'])} of the cores", file=sys.stderr)
            if run["others"] <= BUSY:
                break
        runs.append(run)
    return runs


def ensure_pigz():
    """Installs Debian's pigz if it is missing, as .ci/run installs
    nats-server. If that fails, the pgzip bench skips its pigz row and says
    so in its log."""
    if shutil.which("pigz"):
        return
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    print("installing pigz (apt-get) ...", file=sys.stderr)
    install = sudo + ["apt-get", "install", "-y", "-q", "pigz"]
    if subprocess.run(install).returncode != 0:
        subprocess.run(sudo + ["apt-get", "update", "-q"])
        subprocess.run(install)
    if not shutil.which("pigz"):
        print("could not install pigz: the pgzip bench will skip its pigz row", file=sys.stderr)


def run_bench(name, criterion, logs, max_wait):
    """Runs one bench once, after deleting its groups' old results."""
    if name == "pgzip":
        ensure_pigz()
    for bench, group, *_ in GROUPS:
        if bench == name:
            shutil.rmtree(criterion / group, ignore_errors=True)
    for group in EXTRA_GROUPS.get(name, []):
        shutil.rmtree(criterion / group, ignore_errors=True)
    waited, idle_share = wait_idle(max_wait) if max_wait else (0.0, None)
    before, start, busy, own = loadavg(), time.time(), busy_seconds(), own_seconds()
    print(f"running bench {name} (load {fmt_load(before)}) ...", file=sys.stderr)
    log = logs / f"{name}.log"
    with open(log, "w") as out:
        subprocess.run(["cargo", "bench", "--bench", name] + FEATURES + ["--", "--noplot"],
                       cwd=ROOT, check=True, stdout=out, stderr=subprocess.STDOUT)
    wall = time.time() - start
    return {"bench": name, "load_before": before, "load_after": loadavg(),
            "seconds": wall, "commit": measured_commit(), "others": others_share(busy, own, wall),
            "waited": waited, "idle_share": idle_share,
            "started": datetime.datetime.fromtimestamp(start, datetime.timezone.utc)
            .strftime("%Y-%m-%d %H:%M")}


def parse_time_v(text):
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text)
    seconds = 0.0
    for part in wall.group(1).split(":"):
        seconds = seconds * 60 + float(part)
    return int(rss.group(1)), seconds


def run_memory(target):
    print("building examples/memory.rs ...", file=sys.stderr)
    subprocess.run(["cargo", "build", "--release", "--example", "memory"] + FEATURES, cwd=ROOT, check=True)
    exe = target / "release" / "examples" / "memory"
    results = []
    for mode in MEMORY_MODES:
        for n in MEMORY_COUNTS:
            proc = subprocess.run(["/usr/bin/time", "-v", str(exe), str(n), mode],
                                  cwd=ROOT, check=True, text=True, capture_output=True)
            rss, wall = parse_time_v(proc.stderr)
            checksum = re.search(r"checksum (\d+)", proc.stdout).group(1)
            results.append({"mode": mode, "n": n, "rss_kb": rss, "wall": wall,
                            "checksum": checksum})
    for n in MEMORY_COUNTS:
        sums = {r["checksum"] for r in results if r["n"] == n}
        if len(sums) != 1:
            sys.exit(f"memory example: modes disagree on the checksum of {n} items: {sums}")
    return results


def run_pgzip_memory(target):
    """Runs the release build of examples/pgzip.rs, and its --rayon variant,
    once each on its default input; reads the peak memory (VmHWM) and the
    throughput each prints, and checks each output with `gzip -dc`."""
    print("building examples/pgzip.rs ...", file=sys.stderr)
    subprocess.run(["cargo", "build", "--release", "--example", "pgzip"] + FEATURES, cwd=ROOT, check=True)
    exe = target / "release" / "examples" / "pgzip"
    results = []
    for mode, flags in PGZIP_MODES.items():
        print(f"running examples/pgzip.rs ({mode}) ...", file=sys.stderr)
        out = subprocess.run([str(exe)] + flags, cwd=ROOT, check=True, text=True,
                             capture_output=True).stdout
        field = lambda pattern: re.search(pattern, out, re.M).group(1)  # noqa: E731
        source, gz = Path(field(r"^input:\s+(.*) \(")), Path(field(r"^output:\s+(.*) \("))
        try:
            gunzip = subprocess.Popen(["gzip", "-dc", str(gz)], stdout=subprocess.PIPE)
            same = subprocess.run(["cmp", "-s", "-", str(source)], stdin=gunzip.stdout).returncode == 0
            gunzip.stdout.close()
            if gunzip.wait() != 0 or not same:
                sys.exit(f"examples/pgzip.rs ({mode}): gzip -dc {gz} does not give back {source}")
        finally:
            gz.unlink(missing_ok=True)
        results.append({"mode": mode, "input": source.name, "peak_kb": int(field(r"VmHWM\): (\d+) kB")),
                        "mb_s": float(field(r"([\d.]+) MB/s")), "seconds": float(field(r": ([\d.]+) s,"))})
    return results


def read_criterion(criterion):
    """{group: {(function, value): {median, mad, elements, bytes, mtime}}} from the
    criterion results on disk."""
    out = {}
    for bench_json in criterion.glob("**/new/benchmark.json"):
        meta = json.loads(bench_json.read_text())
        est = json.loads((bench_json.parent / "estimates.json").read_text())
        samples = len(json.loads((bench_json.parent / "sample.json").read_text())["iters"])
        elements = (meta.get("throughput") or {}).get("Elements")
        n_bytes = (meta.get("throughput") or {}).get("Bytes")
        out.setdefault(meta["group_id"], {})[(meta["function_id"], meta["value_str"])] = {
            "median": est["median"]["point_estimate"],
            "mad": est["median_abs_dev"]["point_estimate"],
            "elements": elements,
            "bytes": n_bytes,
            "mtime": bench_json.stat().st_mtime,
            "samples": samples,
        }
    return out


def is_parapipe(name):
    return name.startswith("parapipe")


def flat_rows(rows):
    """{variant: result} of a group measured at no parameter, or at one
    parameter for every variant (`small_runs/*/100`)."""
    values = {v for (_, v) in rows}
    if len(values) == 1:
        return {n: r for (n, _), r in rows.items()}
    return {n: r for (n, v), r in rows.items() if v is None}


def fmt_time(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}" if ns / scale < 100 else f"{ns / scale:.0f} {unit}"
    return f"{ns:.3g} ns"


def fmt_ns(ns):
    return f"{ns:.3g}" if ns < 1000 else f"{ns:,.0f}"


def fmt_x(x):
    return f"{x:.2f}x" if x >= 0.1 else f"{x:.2g}x"


def baseline_of(rows):
    for name in BASELINES:
        if name in rows:
            return rows[name]
    return None


def group_table(rows):
    """Markdown rows for one group: {variant: result}, fastest first."""
    base = baseline_of(rows)
    competitors = [r["median"] for n, r in rows.items() if not is_parapipe(n)]
    best = min(competitors) if competitors else None
    lines = ["| variant | median per run | ns per item | speed-up vs sequential "
             "| time ÷ best competitor's | spread (MAD) |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in sorted(rows.items(), key=lambda kv: kv[1]["median"]):
        per_item = fmt_ns(r["median"] / r["elements"]) if r["elements"] else "-"
        speedup = fmt_x(base["median"] / r["median"]) if base else "-"
        vs_best = f"{r['median'] / best:.2f}" if best else "-"
        label = f"**{name}**" if is_parapipe(name) else name
        if best is not None and r["median"] == best and not is_parapipe(name):
            label += " (best competitor)"
        lines.append(f"| {label} | {fmt_time(r['median'])} | {per_item} | {speedup} "
                     f"| {vs_best} | {100 * r['mad'] / r['median']:.1f}% |")
    return lines


def granularity_tables(results):
    """Two matrices, variants by k: ns per item, and speed-up vs sequential."""
    ks = sorted({int(v) for (_, v) in results}, key=int)
    names = sorted({n for (n, _) in results},
                   key=lambda n: (n != "sequential", is_parapipe(n), n))
    head = "| variant | " + " | ".join(f"k = {k}" for k in ks) + " |"
    sep = "| --- |" + " ---: |" * len(ks)
    per_item, speedup = [head, sep], [head, sep]
    for name in names:
        label = f"**{name}**" if is_parapipe(name) else name
        cells_t, cells_s = [], []
        for k in ks:
            r = results.get((name, str(k)))
            seq = results.get(("sequential", str(k)))
            cells_t.append(fmt_ns(r["median"] / r["elements"]) if r else "-")
            cells_s.append(fmt_x(seq["median"] / r["median"]) if r and seq else "-")
        per_item.append(f"| {label} | " + " | ".join(cells_t) + " |")
        speedup.append(f"| {label} | " + " | ".join(cells_s) + " |")
    best = ["| k | " + " | ".join(str(k) for k in ks) + " |", "| --- |" + " ---: |" * len(ks)]
    best_names, ratios = [], []
    for k in ks:
        comp = {n: r for (n, v), r in results.items() if v == str(k) and not is_parapipe(n)}
        pp = results.get(("parapipe", str(k)))
        name, r = min(comp.items(), key=lambda kv: kv[1]["median"])
        best_names.append(name)
        ratios.append(f"{pp['median'] / r['median']:.2f}" if pp else "-")
    best.append("| best competitor | " + " | ".join(best_names) + " |")
    best.append("| parapipe time ÷ best competitor's | " + " | ".join(ratios) + " |")
    return per_item, speedup, best


def pgzip_tables(rows, memory):
    """The pgzip group, fastest first, and the example's memory runs."""
    base = rows.get("single")
    pp = rows.get("parapipe")
    lines = ["| variant | median per run | MB/s | speed-up vs single | parapipe's time ÷ variant's "
             "| spread (MAD) |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in sorted(rows.items(), key=lambda kv: kv[1]["median"]):
        mb_s = f"{r['bytes'] / r['median'] * 1e3:.1f}" if r["bytes"] else "-"
        speedup = fmt_x(base["median"] / r["median"]) if base else "-"
        vs = f"{pp['median'] / r['median']:.2f}" if pp else "-"
        label = f"**{name}**" if is_parapipe(name) else name
        lines.append(f"| {label} | {fmt_time(r['median'])} | {mb_s} | {speedup} | {vs} "
                     f"| {100 * r['mad'] / r['median']:.1f}% |")
    if "pigz_p2" not in rows:
        lines += ["", "No `pigz_p2` row: pigz was not installed (the bench's log says `SKIPPED pigz`)."]
    lines += ["", "Peak memory: the release build of `examples/pgzip.rs` run once as it is (parapipe, "
              "2 workers, queues of 4 chunks) and once with `--rayon` (the whole file read, every "
              "chunk's output collected), each reading its own `VmHWM`; each output checked with "
              "`gzip -dc` against the input.", ""]
    if memory:
        lines += ["| variant | input | peak memory (VmHWM) | time | MB/s |", "| --- | --- | ---: | ---: | ---: |"]
        lines += [f"| {m['mode']} | {m['input']} | {m['peak_kb'] * 1024 / 1e6:.1f} MB | {m['seconds']:.2f} s "
                  f"| {m['mb_s']:.1f} |" for m in memory]
    else:
        lines += ["Not measured: run with `--bench pgzip` (or every bench)."]
    return lines


def io_workers_table(rows, cpu):
    """Time and CPU time per run, parapipe against hand-written threads, by worker count."""
    ws = sorted({int(v) for (_, v) in rows})
    lines = ["| workers | threads: time | parapipe: time | parapipe ÷ threads | threads: CPU "
             "| parapipe: CPU | parapipe ÷ threads (CPU) |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for w in ws:
        t, p = rows.get(("threads", str(w))), rows.get(("parapipe", str(w)))
        ct, cp = cpu.get(("threads", str(w))), cpu.get(("parapipe", str(w)))
        ratio = lambda a, b: f"{b['median'] / a['median']:.2f}" if a and b and a["median"] else "-"  # noqa: E731
        cell = lambda r: fmt_time(r["median"]) if r else "-"  # noqa: E731
        lines.append(f"| {w:,} | {cell(t)} | {cell(p)} | {ratio(t, p)} | {cell(ct)} | {cell(cp)} "
                     f"| {ratio(ct, cp)} |")
    return lines


def median(results, group, name, value=None):
    r = results.get(group, {}).get((name, value))
    return r["median"] if r else None


def targets(results, memory, pgzip_memory=()):
    """(bench, target, measured, met, margin) for each of issue 5's and
    issue 17's targets."""
    out = []

    def add(bench, target, measured, met, margin):
        out.append((bench, target, measured, "met" if met else "**missed**", margin))

    def over(value, limit, unit=""):
        pct = 100 * (value / limit - 1)
        return f"{abs(pct):.0f}% {'under' if pct <= 0 else 'over'} the limit of {limit:g}{unit}"

    def short(value, need):
        pct = 100 * (value / need - 1)
        return f"{abs(pct):.0f}% {'above' if pct >= 0 else 'short of'} the {need:g}x needed"

    t = median(results, "one_stage_2_workers", "parapipe")
    if t:
        ns = t / 1e6
        add("overhead", "W1: one stage, 2 workers: at most 20 ns per item", f"{ns:.1f} ns per item",
            ns <= 20, over(ns, 20, " ns"))
    o = median(results, "one_stage_2_workers", "parapipe_ordered")
    if t and o:
        add("overhead", "W1: ordered at most 1.3x unordered", f"{o / t:.2f}x", o / t <= 1.3, over(o / t, 1.3, "x"))
    hand = median(results, "serial_20_stages", "hand_written_chain")
    for name in ("parapipe_serial_pipe", "parapipe_serial_segment"):
        s = median(results, "serial_20_stages", name)
        if hand and s:
            add("serial", f"W1: serial 20-stage chain ({name}) within 5% of the hand-written chain",
                f"{s / hand:.3f}x the hand-written chain", s / hand <= 1.05, over(s / hand, 1.05, "x"))
    g = results.get("granularity", {})
    seq10, pp10 = median(results, "granularity", "sequential", "10"), median(results, "granularity", "parapipe", "10")
    if seq10 and pp10:
        ks = sorted({int(v) for (_, v) in g})
        even = [k for k in ks if g.get(("parapipe", str(k))) and g.get(("sequential", str(k)))
                and g[("parapipe", str(k))]["median"] <= g[("sequential", str(k))]["median"]]
        where = f"breaks even from k = {even[0]}" if even else "does not break even for any k measured"
        add("granularity", "W2: break even with sequential by fib(10)",
            f"{seq10 / pp10:.2f}x sequential at k = 10; {where}", pp10 <= seq10, short(seq10 / pp10, 1.0))
    seq15, pp15 = median(results, "granularity", "sequential", "15"), median(results, "granularity", "parapipe", "15")
    if seq15 and pp15:
        add("granularity", "W2: at least 1.8x sequential at fib(15)", f"{seq15 / pp15:.2f}x",
            seq15 / pp15 >= 1.8, short(seq15 / pp15, 1.8))
    seq, pp = median(results, "mandelbrot", "sequential"), median(results, "mandelbrot", "parapipe_ordered")
    if seq and pp:
        add("mandelbrot", "W3: Mandelbrot at least 1.9x sequential, in order", f"{seq / pp:.2f}x",
            seq / pp >= 1.9, short(seq / pp, 1.9))
    for group in ("uneven_stages", "uneven_stages_heavy"):
        seq = median(results, group, "sequential")
        for name in sorted(n for (n, _) in results.get(group, {}) if is_parapipe(n)):
            pp = median(results, group, name)
            if seq and pp:
                add("uneven", f"W4: {group}, {name}: at least 1.8x sequential", f"{seq / pp:.2f}x",
                    seq / pp >= 1.8, short(seq / pp, 1.8))
    limit_ns = 200e6  # 10,000 items / 500 in flight x 10 ms
    for name in ("parapipe", "parapipe_on_runtime"):
        pp = median(results, "async_timer", name)
        if pp:
            add("async_io", f"Async: 10 ms timers, 500 in flight ({name}): within 1.2x of the 200 ms limit",
                f"{pp / limit_ns:.2f}x the limit", pp / limit_ns <= 1.2, over(pp / limit_ns, 1.2, "x"))
        bu = median(results, "async_timer", "buffer_unordered")
        if pp and bu:
            add("async_io", f"Async: 10 ms timers ({name}): within 1.1x of buffer_unordered",
                f"{pp / bu:.2f}x buffer_unordered's time", pp / bu <= 1.1, over(pp / bu, 1.1, "x"))
    pp = median(results, "pgzip", "parapipe")
    for name, label, need in (("rayon", "rayon (`par_chunks`)", 0.95), ("pigz_p2", "`pigz -p 2`", 2.0),
                              ("single", "single-threaded flate2", 1.8)):
        other = median(results, "pgzip", name)
        if pp and other:
            add("pgzip", f"W7: pgzip: parapipe's throughput at least {need:g}x that of {label}", f"{other / pp:.2f}x",
                other / pp >= need, short(other / pp, need))
    for m in pgzip_memory:
        peak = m["peak_kb"] * 1024 / 1e6
        add("pgzip", f"W7: pgzip peak memory under {PGZIP_PEAK_LIMIT / 1e6:g} MB ({m['mode']})", f"{peak:.1f} MB",
            peak < PGZIP_PEAK_LIMIT / 1e6, over(peak, PGZIP_PEAK_LIMIT / 1e6, " MB"))
    # Issue 17's targets, each a ratio measured side by side in one run.
    for k in range(10, 16):
        rayon = median(results, "granularity", "rayon_par_iter", str(k))
        pp = median(results, "granularity", "parapipe", str(k))
        need = 0.8 if k == 10 else 0.97
        if rayon and pp:
            add("granularity", f"17.1: fine grain, fib({k}): at least {need:g}x rayon par_iter's speed-up",
                f"{rayon / pp:.2f}x", rayon / pp >= need, short(rayon / pp, need))
    for group in ("uneven_stages", "uneven_stages_heavy"):
        rayon = median(results, group, "rayon_par_iter")
        for name in sorted(n for (n, _) in results.get(group, {}) if is_parapipe(n)):
            pp = median(results, group, name)
            if rayon and pp:
                add("uneven", f"17.2: {group}, {name}: at least 0.98x rayon par_iter's speed-up",
                    f"{rayon / pp:.2f}x", rayon / pp >= 0.98, short(rayon / pp, 0.98))
    bridge, pp = median(results, "twenty_stage_chain", "rayon_par_bridge"), median(results, "twenty_stage_chain", "parapipe")
    if bridge and pp:
        add("overhead", "17.3: naive 20-stage chain: no more per item than rayon par_bridge",
            f"{pp / bridge:.2f}x par_bridge's time", pp <= bridge, over(pp / bridge, 1.0, "x"))
    one, five = median(results, "chain_growth", "parapipe_1"), median(results, "chain_growth", "parapipe_5")
    if one and five:
        add("overhead", "17.3: naive 5-stage chain: at most 2x the 1-stage cost",
            f"{five / one:.2f}x", five / one <= 2, over(five / one, 2, "x"))
    rayon = median(results, "small_runs", "rayon_par_iter", "100")
    for name in ("parapipe_threads", "parapipe"):
        pp = median(results, "small_runs", name, "100")
        if rayon and pp:
            add("small_runs", f"17.4: 3 stages over 100 items ({name}): at most 3x rayon par_iter",
                f"{pp / rayon:.1f}x", pp / rayon <= 3, over(pp / rayon, 3, "x"))
    for w, limit in ((4096, 1.5), (1024, 1.1)):
        for group, what in (("io_workers", "time"), ("io_workers_cpu", "CPU time")):
            t, pp = median(results, group, "threads", str(w)), median(results, group, "parapipe", str(w))
            if t and pp:
                add("io_workers", f"17.4b: {w:,} IO workers: at most {limit:g}x the {what} of hand-written threads",
                    f"{pp / t:.2f}x", pp / t <= limit, over(pp / t, limit, "x"))
    for kind in ("map", "iter"):
        off = median(results, "profiler", f"{kind}_off")
        for mode in ("in_memory", "stored"):
            on = median(results, "profiler", f"{kind}_{mode}")
            if off and on:
                add("profiler", f"17.7: profiler ({kind} stage, {mode}): at most 10% slower than unprofiled",
                    f"{on / off:.3f}x", on / off <= 1.1, over(on / off, 1.1, "x"))
    for mode, label in (("bounded", "W5"), ("async", "W5, through an async stage")):
        peaks = {m["n"]: m["rss_kb"] for m in memory if m["mode"] == mode}
        if len(peaks) == len(MEMORY_COUNTS):
            lo, hi = peaks[MEMORY_COUNTS[0]], peaks[MEMORY_COUNTS[-1]]
            growth = hi - lo
            add(None, f"{label}: peak RSS flat from {MEMORY_COUNTS[0]:,} to {MEMORY_COUNTS[-1]:,} items "
                f"(grows at most {MEMORY_FLAT_KB // 1024} MiB)",
                f"{lo / 1024:.1f} MiB -> {hi / 1024:.1f} MiB ({growth / 1024:+.1f} MiB)",
                growth <= MEMORY_FLAT_KB, f"{growth / 1024:+.1f} MiB of {MEMORY_FLAT_KB / 1024:.0f} MiB allowed")
    return out


# ---- the chart -------------------------------------------------------------

PANEL_W, BAR_H, LABEL_W, PAD = 760, 15, 210, 10
LOG_MAX = 4.0


def svg_text(x, y, s, size=11, anchor="start", weight="normal", fill="#222"):
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
            f'font-weight="{weight}" fill="{fill}">{html.escape(s)}</text>')


def log_x(v, x0, width, log_min):
    v = min(max(v, log_min), LOG_MAX)
    return x0 + width * (math.log10(v) - math.log10(log_min)) / (math.log10(LOG_MAX) - math.log10(log_min))


def bar_panel(y, title, rows, log_min):
    """Horizontal bars of the speed-up vs sequential: on a log axis from
    log_min when log_min is given, else on a linear axis from 0."""
    base = baseline_of(rows)
    items = sorted(rows.items(), key=lambda kv: kv[1]["median"])
    x0, width = LABEL_W, PANEL_W - LABEL_W - 70
    if log_min is None:
        top_x = max(2.5, max(base["median"] / r["median"] for _, r in items))
        scale = lambda v: x0 + width * min(v, top_x) / top_x  # noqa: E731
        ticks = [t / 2 for t in range(0, int(2 * top_x) + 1)]
    else:
        scale = lambda v: log_x(v, x0, width, log_min)  # noqa: E731
        ticks = [10.0 ** e for e in range(round(math.log10(log_min)), 1)] + [2]
    parts = [svg_text(PAD, y + 14, title + (" (log scale)" if log_min else ""), 13, weight="bold")]
    y += 24
    top = y
    for name, r in items:
        s = base["median"] / r["median"]
        color = "#d95f02" if is_parapipe(name) else "#7570b3"
        parts.append(svg_text(x0 - 6, y + BAR_H - 4, name, 11, "end",
                              "bold" if is_parapipe(name) else "normal"))
        parts.append(f'<rect x="{x0}" y="{y + 1}" width="{scale(s) - x0:.1f}" '
                     f'height="{BAR_H - 2}" fill="{color}"/>')
        parts.append(svg_text(scale(s) + 4, y + BAR_H - 4, fmt_x(s), 10))
        y += BAR_H
    for tick in ticks:
        tx = scale(tick)
        dash = "" if tick == 1 else ' stroke-dasharray="2,3"'
        parts.append(f'<line x1="{tx:.1f}" y1="{top}" x2="{tx:.1f}" y2="{y}" stroke="#444"{dash}/>')
        parts.append(svg_text(tx, y + 12, f"{tick:g}x", 10, "middle"))
    return parts, y + 24


def line_panel(y, title, results):
    """Speed-up vs sequential against k, one line per variant."""
    ks = sorted({int(v) for (_, v) in results})
    names = sorted({n for (n, _) in results if n != "sequential"}, key=lambda n: (is_parapipe(n), n))
    x0, width, height = LABEL_W, PANEL_W - LABEL_W - 70, 180
    ymax = 2.5
    parts = [svg_text(PAD, y + 14, title, 13, weight="bold")]
    y += 24
    px = lambda k: x0 + width * (k - ks[0]) / max(1, ks[-1] - ks[0])  # noqa: E731
    py = lambda s: y + height * (1 - min(s, ymax) / ymax)  # noqa: E731
    for tick in (0, 0.5, 1, 1.5, 2, 2.5):
        dash = "" if tick == 1 else ' stroke-dasharray="2,3"'
        parts.append(f'<line x1="{x0}" y1="{py(tick):.1f}" x2="{x0 + width}" y2="{py(tick):.1f}" '
                     f'stroke="#999"{dash}/>')
        parts.append(svg_text(x0 - 6, py(tick) + 4, f"{tick:g}x", 10, "end"))
    for k in ks:
        parts.append(svg_text(px(k), y + height + 14, f"fib({k})", 10, "middle"))
    palette = ["#1b9e77", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666", "#1f78b4"]
    for i, name in enumerate(names):
        pts = []
        for k in ks:
            r, seq = results.get((name, str(k))), results.get(("sequential", str(k)))
            if r and seq:
                pts.append((px(k), py(seq["median"] / r["median"])))
        color = "#d95f02" if is_parapipe(name) else palette[i % len(palette)]
        stroke = 3 if is_parapipe(name) else 1.5
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="{stroke}" points="'
                     + " ".join(f"{a:.1f},{b:.1f}" for a, b in pts) + '"/>')
        ly = y + 12 + 13 * i
        parts.append(f'<line x1="{PAD}" y1="{ly - 4}" x2="{PAD + 18}" y2="{ly - 4}" stroke="{color}" '
                     f'stroke-width="{stroke}"/>')
        parts.append(svg_text(PAD + 22, ly, name, 10, weight="bold" if is_parapipe(name) else "normal"))
    return parts, y + height + 34


def chart(results, title):
    panels = []
    for _, group, heading, _ in GROUPS:
        rows = results.get(group)
        if rows and group == "io_workers":
            continue
        if rows and group != "granularity":
            flat = flat_rows(rows)
            base = baseline_of(flat)
            if base:
                panels.append((heading, flat, min(base["median"] / r["median"] for r in flat.values())))
        elif rows:
            panels.append((heading, rows, None))
    # Panels whose slowest variant is within 4x of sequential get a linear
    # axis; the others share one log axis, so their bars compare.
    slowest = min([p[2] for p in panels if p[2] is not None] or [0.1])
    log_min = 10.0 ** min(-1, math.floor(math.log10(slowest)))
    parts = [svg_text(PAD, 20, title, 14, weight="bold"),
             svg_text(PAD, 36, "orange: parapipe; other colours: the competitors; "
                      "solid line: 1x, as fast as the sequential run", 11)]
    y = 48
    for heading, rows, lowest in panels:
        if lowest is None:
            p, y = line_panel(y, heading + ": speed-up vs sequential", rows)
        else:
            p, y = bar_panel(y, heading + ": speed-up vs sequential", rows,
                             None if lowest >= 0.25 else log_min)
        parts += p
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{PANEL_W}" height="{y}" '
            f'viewBox="0 0 {PANEL_W} {y}" font-family="sans-serif">\n'
            f'<rect width="100%" height="100%" fill="white"/>\n' + "\n".join(parts) + "\n</svg>\n")


# ---- the report ------------------------------------------------------------

def code_measured(state):
    """The commit the benches measured, or a note that it differs per bench."""
    commits = {r.get("commit") for r in state.get("runs", [])}
    if len(commits) == 1 and None not in commits:
        return f"commit {commits.pop()}"
    if len(commits) > 1:
        return "per bench, in the table below"
    return f"commit {state.get('commit') or measured_commit()}"


def sample_counts(results):
    counts = sorted({r["samples"] for g in results.values() for r in g.values()})
    return " or ".join(str(c) for c in counts) or "no"


def report(results, state, info):
    memory, runs = state.get("memory", []), state.get("runs", [])
    md = ["# Benchmarks", "",
          "<!-- Generated by scripts/bench-report.py: do not edit by hand. -->", "",
          "Generated by `scripts/bench-report.py` from one run of the suite: nothing here is "
          "typed by hand. To regenerate it (about 25 minutes on 2 cores), from the repository root:",
          "", "```sh",
          "python3 scripts/bench-report.py                # run every bench and the memory runs, rewrite this file and the chart",
          "python3 scripts/bench-report.py --wait-idle 600 --retries 2  # the same on a shared machine: wait for it to be idle, rerun disturbed benches",
          "python3 scripts/bench-report.py --bench uneven # rerun one bench, keep the other results",
          "python3 scripts/bench-report.py --no-bench --no-memory  # rewrite both from the last results on disk",
          "```", "",
          "Each bench runs parapipe and its competitors in one process on the same input, and "
          "checks every variant's result (a checksum, or the rows in order): on every iteration, "
          "except in `benches/serial.rs`, which checks each variant once before measuring. "
          f"Times are criterion medians of {sample_counts(results)} samples per variant. Speed-up is the sequential variant's median "
          "divided by the variant's; \"time ÷ best competitor's\" compares with the fastest "
          "variant that is not parapipe (the sequential one included). Spread is the median "
          "absolute deviation of the samples, as a share of the median. The benches' own doc "
          "comments (`benches/*.rs`) say how each competitor is configured.", "",
          "## Machine", "",
          "| | |", "| --- | --- |",
          f"| CPU | {info['cpu']} |",
          f"| cores | {info['cores']} ({info['usable_cores']} usable by this process) |",
          f"| memory | {info['memory']} |",
          f"| rustc | {info['rustc']} |",
          f"| kernel | {info['kernel']} |",
          f"| code measured | {code_measured(state)} (the last commit that changed anything but "
          "docs/, scripts/ and README.md when the bench ran) |",
          f"| last run | {state['started']} to {state['finished']} (UTC) |",
          f"| load average (1, 5, 15 min) at its start | {fmt_load(state['load_start'])} |",
          f"| load average at its end | {fmt_load(state['load_end'])} |", ""]
    if runs:
        md += ["The machine may have been shared with other work (another engineer's builds) during "
               "the run. For each bench, the share of the cores that other processes kept busy while "
               "it ran (all busy CPU time from `/proc/stat`, less the bench's own) shows how much; "
               "the load average is given too, but it counts the benches' own threads (a 20-stage "
               "chain runs over 20). Ratios within one bench were measured in the same process, "
               "close in time, and suffer less from sharing than absolute times.", "",
               "| bench | code measured | started (UTC) | waited for idle | others' CPU use | load before | load after | wall time |",
               "| --- | --- | --- | ---: | ---: | --- | --- | ---: |"]
        md += [f"| {r['bench']} | {r.get('commit', '-')} | {r['started']} | {r.get('waited', 0):.0f} s | "
               f"{fmt_share(r.get('others'))} | {fmt_load(r['load_before'])} | "
               f"{fmt_load(r['load_after'])} | {r['seconds']:.0f} s |" for r in runs]
        md.append("")

    others = {r["bench"]: r.get("others") for r in runs}
    md += ["## Targets of issues 5 and 17", "",
           "The last column is the share of the cores other processes used while the target's bench "
           "ran: where it is high, the ratios are less trustworthy.", "",
           "| target | measured | | margin | others' CPU use |", "| --- | --- | --- | --- | ---: |"]
    md += [f"| {t} | {m} | {ok} | {margin} | {fmt_share(others.get(bench))} |"
           for bench, t, m, ok, margin in targets(results, memory, state.get("pgzip_memory", []))]
    md += ["", "![speed-up of every variant against the sequential one](benchmarks.svg)", ""]

    for bench, group, heading, what in GROUPS:
        rows = results.get(group)
        md += [f"## {heading}", "", f"{what} From `benches/{bench}.rs`.", ""]
        if not rows:
            md += ["No results: the bench has not been run.", ""]
            continue
        if group == "granularity":
            per_item, speedup, best = granularity_tables(rows)
            md += ["Median time per item (ns):", ""] + per_item + ["", "Speed-up vs sequential:", ""]
            md += speedup + ["", "parapipe against the fastest competitor at each k:", ""] + best + [""]
        elif group == "pgzip":
            md += pgzip_tables({n: r for (n, v), r in rows.items() if v is None},
                               state.get("pgzip_memory", [])) + [""]
        elif group == "io_workers":
            md += io_workers_table(rows, results.get("io_workers_cpu", {})) + [""]
        else:
            md += group_table(flat_rows(rows)) + [""]

    md += ["## 5. Memory", "",
           "`examples/memory.rs`: items of 64 bytes from a fast source through one stage "
           "(2 workers, `qsize = 30`) to a consumer slower than both, run under `/usr/bin/time -v`. "
           "`bounded` is the stage as written, `unbounded` the same stage with no queue limit, "
           "`sequential` the same items and consumer with no pipeline (the process's own footprint). "
           "All modes print the same checksum for the same count (checked).", ""]
    if memory:
        md += ["| mode | items | peak RSS | wall time |", "| --- | ---: | ---: | ---: |"]
        md += [f"| {m['mode']} | {m['n']:,} | {m['rss_kb'] / 1024:.1f} MiB | {m['wall']:.2f} s |" for m in memory]
    else:
        md += ["Not measured in this run (`--no-memory`)."]
    md.append("")
    md += ["## On a machine with many more cores", "",
           "Every number above is from 2 cores, where the source, the consumer and the workers "
           "share the cores and each hand-off may cost a thread wake. With many cores those wakes "
           "get cheaper and the paths that all workers of a stage share decide how far a stage "
           "scales:", "",
           "- a stage's input queue is one flume channel (one lock) that all its workers take "
           "batches from, and its output queue one that they all send to: one lock per batch of "
           "up to 512 items, not per item, but cheap items on many workers meet there;",
           "- beyond 16 workers, one worker at a time waits on an empty input queue (or a full "
           "output queue), the others on a lock (`CROWD` in `link.rs`): items still go to every "
           "worker as fast as they come, the waits are what is serialised;",
           "- an ordered stage's reorder step is one lock taken per batch;",
           "- the source is one thread, and the consumer is yours: a pipeline never delivers "
           "faster than either;",
           "- a profiled run adds atomics per batch per worker, not per item.", "",
           "To run the suite unchanged on such a machine, set the threads per parallel variant: "
           "`PARAPIPE_BENCH_THREADS=16 python3 scripts/bench-report.py`. rayon's pool, the "
           "parallel stages' workers (one stage in `granularity`, `mandelbrot` and "
           "`one_stage_2_workers`, each of the five in `uneven`), pariter, pipeliner, the "
           "hand-written threads and `pigz -p` follow it (default 2; row names keep their `2`). The "
           "naive chains and small runs keep one worker per stage, as written, and "
           "`benches/io_workers.rs` takes its worker counts from `PARAPIPE_BENCH_WORKERS` "
           "(default 256,512,1024,2048,4096). The targets above are 2-core targets.", ""]
    return "\n".join(md)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-bench", action="store_true", help="do not run the benches; use the results on disk")
    ap.add_argument("--bench", action="append", choices=BENCHES, help="run only this bench (repeatable)")
    ap.add_argument("--no-memory", action="store_true", help="skip the memory runs of workload 5")
    ap.add_argument("--wait-idle", type=float, metavar="SECONDS", default=0,
                    help="before each bench, wait up to SECONDS for other processes to use "
                         "less than 10%% of the cores")
    ap.add_argument("--retries", type=int, default=0, metavar="N",
                    help="run a bench again, up to N times, while other processes used more "
                         "than 10%% of the cores during its run")
    ap.add_argument("--out", type=Path, default=ROOT / "docs", help="where to write benchmarks.md and .svg")
    args = ap.parse_args()

    target = target_dir()
    criterion = target / "criterion"
    logs = target / "bench-report"
    logs.mkdir(parents=True, exist_ok=True)
    # What the last runs measured besides criterion's results (per-bench load,
    # memory peaks), so that --no-bench or --bench X can rewrite the report
    # without losing it.
    state_file = logs / "run.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    measures = not args.no_bench or not args.no_memory
    now = lambda: datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")  # noqa: E731
    if measures:
        state["started"], state["load_start"] = now(), loadavg()
        state["commit"] = measured_commit()
    if not args.no_bench:
        names = args.bench or BENCHES
        runs = {r["bench"]: r for r in state.get("runs", [])}
        runs.update({r["bench"]: r for r in run_benches(names, criterion, logs, args.wait_idle, args.retries)})
        state["runs"] = [runs[b] for b in BENCHES if b in runs]
        if "pgzip" in names:
            state["pgzip_memory"] = run_pgzip_memory(target)
    if not args.no_memory:
        if args.wait_idle:
            wait_idle(args.wait_idle)
        state["memory"] = run_memory(target)
    if measures:
        state["finished"], state["load_end"] = now(), loadavg()
        state_file.write_text(json.dumps(state, indent=1))
    if "started" not in state:
        sys.exit(f"nothing measured yet: run without --no-bench/--no-memory first ({state_file} is missing)")

    results = read_criterion(criterion)
    info = machine()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "benchmarks.md").write_text(report(results, state, info))
    (args.out / "benchmarks.svg").write_text(
        chart(results, f"parapipe and its competitors, speed-up vs sequential ({info['cpu']}, "
                       f"{info['cores']} cores)"))
    print(f"wrote {args.out / 'benchmarks.md'} and {args.out / 'benchmarks.svg'}; "
          f"bench logs in {logs}", file=sys.stderr)


if __name__ == "__main__":
    main()
