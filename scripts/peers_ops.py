#!/usr/bin/python3
"""Ordinary operations beside NumPy and PyTorch: svd, sqrt and exp.

`opforge bench ops --json` times linalg.svd of an n x n matrix, and
elementwise.sqrt and elementwise.exp of n values, through their plugins. This
script alternates it, round after round, with the same operations in NumPy
(numpy.linalg.svd with full_matrices=False, numpy.sqrt, numpy.exp) and PyTorch
(torch.linalg.svd, torch.sqrt, torch.exp) on
data of the same sizes and dtype, and reports for each case the median over the
rounds of each peer's time divided by opforge's (above 1: opforge is faster),
with its range, and the medians of the times themselves.

    /usr/bin/python3 scripts/peers_ops.py --rounds 5 --threads 2
    /usr/bin/python3 scripts/peers_ops.py --threads 1 --json

Each timing is the median of --repeat calls after two untimed ones, as in
`opforge bench ops`. Threads: NumPy's BLAS (OPENBLAS_NUM_THREADS, set before
NumPy is imported), torch.set_num_threads, and opforge's --threads. NumPy's
sqrt and exp run on one thread whatever the setting.

Needs NumPy; PyTorch is optional (its columns are left out without it). Never
needed to build or test opforge.
"""
import argparse
import json
import os
import statistics
import sys
import time

from opforge_cli import default_opforge, json_rows


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--opforge", default=default_opforge(), help="the opforge program; default %(default)s")
    p.add_argument("--svd-sizes", default="256,512,1024", help="n of the n x n svd inputs; default %(default)s")
    p.add_argument("--elementwise-sizes", default="1000000,10000000",
                   help="element counts for sqrt and exp; default %(default)s")
    p.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    p.add_argument("--rounds", type=int, default=5, help="alternations; default %(default)s")
    p.add_argument("--repeat", type=int, default=11, help="timed calls per case per round; default %(default)s")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="default: all cores")
    p.add_argument("--json", action="store_true", help="one JSON object per case on stdout")
    a = p.parse_args(argv)
    for name in ("svd_sizes", "elementwise_sizes"):
        try:
            vals = [int(v) for v in getattr(a, name).split(",")]
        except ValueError:
            p.error("--%s must be a comma-separated list of integers" % name.replace("_", "-"))
        if not vals or any(v <= 0 for v in vals):
            p.error("--%s must list positive integers" % name.replace("_", "-"))
        setattr(a, name, vals)
    if a.rounds < 1 or a.repeat < 1 or a.threads < 1:
        p.error("--rounds, --repeat and --threads must be at least 1")
    return a


def median_ms(run, repeat):
    run()
    run()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        run()
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts)


def main(argv=None):
    a = parse_args(argv)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(a.threads)
    try:
        import numpy as np
    except ImportError as exc:
        print("peers_ops.py: NumPy is not importable (%s); nothing can run." % exc, file=sys.stderr)
        return 1
    try:
        import torch
        torch.set_num_threads(a.threads)
    except ImportError:
        torch = None
        print("peers_ops.py: PyTorch is not importable; its columns are left out.", file=sys.stderr)

    dt = np.float64 if a.dtype == "float64" else np.float32
    rng = np.random.default_rng(42)
    cases = []  # (op, n, numpy callable, torch callable or None)
    for n in a.svd_sizes:
        m = rng.standard_normal((n, n)).astype(dt)
        tm = torch.from_numpy(m) if torch else None
        cases.append(("svd", n, lambda m=m: np.linalg.svd(m, full_matrices=False),
                      (lambda tm=tm: torch.linalg.svd(tm, full_matrices=False)) if torch else None))
    for n in a.elementwise_sizes:
        v = (0.5 + (np.arange(n) % 4000) / 1000.0).astype(dt)
        tv = torch.from_numpy(v) if torch else None
        cases.append(("sqrt", n, lambda v=v: np.sqrt(v), (lambda tv=tv: torch.sqrt(tv)) if torch else None))
        cases.append(("exp", n, lambda v=v: np.exp(v), (lambda tv=tv: torch.exp(tv)) if torch else None))

    cmd = [a.opforge, "bench", "ops", "--json", "--dtype", a.dtype, "--repeat", str(a.repeat),
           "--threads", str(a.threads), "--svd-sizes", ",".join(map(str, a.svd_sizes)),
           "--elementwise-sizes", ",".join(map(str, a.elementwise_sizes))]
    times = {(op, n): {"opforge": [], "numpy": [], "torch": []} for op, n, _, _ in cases}
    for r in range(a.rounds):
        print("peers_ops: round %d/%d" % (r + 1, a.rounds), file=sys.stderr, flush=True)
        rows, _ = json_rows(cmd, "peers_ops")
        for row in rows:
            times[(row["op"], row["n"])]["opforge"].append(row["median_ms"])
        for op, n, f_np, f_torch in cases:
            times[(op, n)]["numpy"].append(median_ms(f_np, a.repeat))
            if f_torch:
                times[(op, n)]["torch"].append(median_ms(f_torch, a.repeat))

    for op, n, _, _ in cases:
        t = times[(op, n)]
        row = {"op": op, "n": n, "dtype": a.dtype, "threads": a.threads, "rounds": a.rounds,
               "opforge_ms": statistics.median(t["opforge"]), "numpy_ms": statistics.median(t["numpy"])}
        ratios = {}
        for peer in ("numpy", "torch"):
            if t[peer]:
                rs = [p / o for p, o in zip(t[peer], t["opforge"])]
                ratios[peer] = (statistics.median(rs), min(rs), max(rs))
                row[peer + "_over_opforge"] = ratios[peer][0]
        if t["torch"]:
            row["torch_ms"] = statistics.median(t["torch"])
        if a.json:
            print(json.dumps(row))
            continue
        text = "%-4s n=%-9d %s %d thread(s): opforge %.3f ms, NumPy %.3f ms" % (
            op, n, a.dtype, a.threads, row["opforge_ms"], row["numpy_ms"])
        if t["torch"]:
            text += ", PyTorch %.3f ms" % row["torch_ms"]
        text += "; " + ", ".join("%s / opforge %.2f (%.2f-%.2f)" % ((peer,) + ratios[peer]) for peer in ratios)
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
