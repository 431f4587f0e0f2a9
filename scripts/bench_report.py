#!/usr/bin/env python3
"""Turns benchmark JSON lines into the table and plot of docs/benchmarks.md.

Input: JSON lines from `opforge bench lstsq --json` and, optionally, from
`scripts/peers.py --json` (same keys: d, dtype, method, median_ms, ...).
Output: a Markdown table on stdout (median ms per method, and each method's
ratio to reading A once and to PyTorch's autograd), and with --png a plot of
median time against d for every method and peer, drawn by gnuplot.

    build/bin/opforge bench lstsq --sizes 300,1000,2000,4000 --json > /tmp/opforge.jsonl
    /usr/bin/python3 scripts/peers.py --sizes 300,1000,2000,4000 --json > /tmp/peers.jsonl
    /usr/bin/python3 scripts/bench_report.py /tmp/opforge.jsonl /tmp/peers.jsonl --png docs/img/lstsq.png

Only the Python standard library and gnuplot (Debian: gnuplot-nox) are used.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict

ORDER = ["fused", "graph", "explicit", "bandwidth", "torch_autograd", "numpy_explicit"]
PEERS = ("torch_autograd", "numpy_explicit")


def load(paths):
    rows = []
    for path in paths:
        try:
            with open(path) as f:
                for number, line in enumerate(f, 1):
                    line = line.strip()
                    if line.startswith("{"):
                        try:
                            rows.append(json.loads(line))
                        except json.JSONDecodeError as e:
                            sys.exit(f"bench_report.py: {path}:{number}: not a JSON object ({e.msg}): {line[:80]}")
        except OSError as e:
            sys.exit(f"bench_report.py: cannot read {path}: {e.strerror}")
    return rows


def table(rows):
    # (dtype, d, threads, caches) -> method -> row; the peers' rows carry threads
    # too, and no caches (they run warm).
    by = defaultdict(dict)
    for r in rows:
        by[(r["dtype"], int(r["d"]), int(r.get("threads", 0)), r.get("caches", "warm"))][r["method"]] = r
    methods = [m for m in ORDER if any(m in v for v in by.values())]
    many_threads = len({k[2] for k in by}) > 1
    many_caches = len({k[3] for k in by}) > 1
    extra = (" threads |" if many_threads else "") + (" caches |" if many_caches else "")
    out = ["| dtype | d |" + extra + " A (MB) | " + " | ".join(f"{m} ms" for m in methods) +
           " | fused / read A | fused vs torch |",
           "|---|---|" + "---|" * (many_threads + many_caches) + "---|" + "---|" * len(methods) + "---|---|"]
    for key in sorted(by, key=lambda k: (k[0] != "float64", k[1], k[2], k[3])):
        dtype, d, threads, caches = key
        v = by[key]
        size = 10 * d * d * (8 if dtype == "float64" else 4) / 1e6
        cells = [f"{v[m]['median_ms']:.3f}" if m in v else "" for m in methods]
        read = v.get("fused", {}).get("ratio_bandwidth")
        torch = (v["torch_autograd"]["median_ms"] / v["fused"]["median_ms"]
                 if "torch_autograd" in v and "fused" in v else None)
        read_cell = f"{read:.2f}x" if read else ""
        torch_cell = f"{torch:.2f}x faster" if torch else ""
        lead = (f" {threads} |" if many_threads else "") + (f" {caches} |" if many_caches else "")
        size_cell = f"{size:.0f}" if size >= 10 else f"{size:.2g}"
        out.append(f"| {dtype} | {d} |{lead} {size_cell} | " + " | ".join(cells) + f" | {read_cell} | {torch_cell} |")
    return "\n".join(out)


def plot(rows, png):
    """One panel per dtype: median time against d, log-log, a line per method
    (and per thread count and cache mode, where the rows have several)."""
    many_threads = len({int(r.get("threads", 0)) for r in rows if r["method"] not in PEERS}) > 1
    many_caches = len({r.get("caches", "warm") for r in rows}) > 1
    series = defaultdict(list)  # (label, dtype) -> [(d, ms)]
    for r in rows:
        label = r["method"]
        if many_threads:
            n = int(r.get("threads", 0))
            label += f", {n} thread{'' if n == 1 else 's'}"
        if many_caches:
            label += f", {r.get('caches', 'warm')}"
        series[(label, r["dtype"])].append((int(r["d"]), float(r["median_ms"])))
    dtypes = [t for t in ("float64", "float32") if any(k[1] == t for k in series)]
    with tempfile.TemporaryDirectory() as tmp:
        lines = [
            "set terminal pngcairo size 1400,600 noenhanced" if has_cairo() else "set terminal png size 1400,600",
            f"set output '{png}'",
            f"set multiplot layout 1,{len(dtypes)} title "
            "'gradient of ||y - Ax||^2 with respect to x, A is 10d x d: median time per call'",
            "set xlabel 'd'", "set ylabel 'milliseconds'", "set logscale xy", "set grid", "set key left top",
        ]
        for dtype in dtypes:
            plots = []
            labels = sorted((k[0] for k in series if k[1] == dtype),
                            key=lambda l: (ORDER.index(l.split(",")[0]) if l.split(",")[0] in ORDER else len(ORDER), l))
            for n, label in enumerate(labels):
                path = os.path.join(tmp, f"{n}_{dtype}.dat")
                with open(path, "w") as f:
                    for d, ms in sorted(series[(label, dtype)]):
                        f.write(f"{d} {ms}\n")
                style = "dt 2" if label.startswith("bandwidth") else "dt 1"
                plots.append(f"'{path}' using 1:2 with linespoints {style} lw 2 pt 7 title '{label}'")
            lines.append(f"set title '{dtype}'")
            lines.append("plot " + ", ".join(plots))
        lines.append("unset multiplot")
        subprocess.run(["gnuplot"], input="\n".join(lines), text=True, check=True)


def has_cairo():
    out = subprocess.run(["gnuplot", "-e", "set terminal"], capture_output=True, text=True)
    return "pngcairo" in (out.stdout + out.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("inputs", nargs="+", help="files of JSON lines")
    ap.add_argument("--png", help="write the plot here")
    args = ap.parse_args()
    rows = load(args.inputs)
    if not rows:
        sys.exit("bench_report.py: no JSON rows in " + ", ".join(args.inputs))
    bad = [r for r in rows if not all(k in r for k in ("d", "dtype", "method", "median_ms"))]
    if bad:
        sys.exit("bench_report.py: a row lacks d, dtype, method or median_ms (this script reads `opforge bench "
                 "lstsq --json` and `scripts/peers.py --json`, not bench ops or overhead): " + json.dumps(bad[0]))
    if args.png and not shutil.which("gnuplot"):
        sys.exit("bench_report.py: --png needs gnuplot (Debian: apt-get install gnuplot-nox)")
    print(table(rows))
    if args.png:
        os.makedirs(os.path.dirname(os.path.abspath(args.png)), exist_ok=True)
        plot(rows, args.png)
        print(f"\nplot written to {args.png}", file=sys.stderr)


if __name__ == "__main__":
    main()
