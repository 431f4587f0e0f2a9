#!/usr/bin/python3
"""Benchmark opforge's peers on its main job: a least-squares gradient.

What it measures
    The gradient with respect to x of

        L = ||y - A x||^2,   A in R^{10d x d},  x in R^d,  y in R^{10d},

    computed by established libraries ("peers") that opforge is compared to:

      numpy_explicit  g = -2 * A.T @ (y - A @ x), written out by hand in NumPy
      torch_autograd  forward ((y - A @ x) ** 2).sum() and loss.backward()
                      in PyTorch, timed together

    For each (d, dtype, method) it does two untimed warm-up runs, then
    --repeat timed runs (time.perf_counter), and reports the median and
    minimum in milliseconds. rel_err is the maximum absolute difference from
    a float64 NumPy reference gradient, divided by the reference's maximum
    absolute value.

    Data is deterministic: numpy.random.default_rng(42) draws A, x and y
    from a standard normal in float64; they are then cast to the dtype.

How to run
    /usr/bin/python3 scripts/peers.py
    /usr/bin/python3 scripts/peers.py --sizes 300,1000 --dtype float64 \\
        --repeat 20 --threads 2 --json

    --json prints one JSON object per line on stdout; otherwise an aligned
    table is printed. Progress messages go to stderr.

This script is optional. It is never needed to build or test opforge; it
only needs NumPy (and PyTorch for the torch rows, which are skipped with a
note when PyTorch is missing).
"""

import argparse
import json
import os
import statistics
import sys
import time

ALL_METHODS = ("numpy_explicit", "torch_autograd")
DEFAULT_SIZES = "300,1000,2000"
SEED = 42


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Benchmark peers (NumPy, PyTorch) on the gradient of "
                    "||y - A x||^2 with respect to x.")
    parser.add_argument("--sizes", default=DEFAULT_SIZES,
                        help="comma-separated list of d (A is 10d x d); "
                             "default %(default)s")
    parser.add_argument("--dtype", choices=("float64", "float32", "both"),
                        default="both", help="default %(default)s")
    parser.add_argument("--repeat", type=int, default=20,
                        help="timed runs per row; default %(default)s")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="BLAS / torch threads; default os.cpu_count()")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object per line on stdout")
    parser.add_argument("--methods", default=",".join(ALL_METHODS),
                        help="comma-separated subset of: "
                             + ", ".join(ALL_METHODS)
                             + "; default all")
    args = parser.parse_args(argv)

    try:
        args.sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        parser.error("--sizes must be a comma-separated list of integers, with no empty item (got %r)"
                     % args.sizes)
    if not args.sizes or any(d <= 0 for d in args.sizes):
        parser.error("--sizes must list positive integers")

    args.methods = [m.strip() for m in args.methods.split(",")]
    unknown = [m for m in args.methods if m not in ALL_METHODS]
    if unknown or not args.methods:
        parser.error("unknown --methods: %s (choose from %s)"
                     % (", ".join(unknown) or "(none)", ", ".join(ALL_METHODS)))

    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.threads < 1:
        parser.error("--threads must be at least 1")

    args.dtypes = (["float64", "float32"] if args.dtype == "both"
                   else [args.dtype])
    return args


def note(message):
    print(message, file=sys.stderr, flush=True)


def set_thread_env(threads):
    """Must run before numpy/torch are imported for BLAS to pick it up."""
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)


def make_data(np, d):
    """A (10d x d), x (d), y (10d) in float64, drawn with a fixed seed."""
    rng = np.random.default_rng(SEED)
    a = rng.standard_normal((10 * d, d))
    x = rng.standard_normal(d)
    y = rng.standard_normal(10 * d)
    return a, x, y


def reference_gradient(a64, x64, y64):
    return -2.0 * (a64.T @ (y64 - a64 @ x64))


def time_runs(run, repeat):
    """Two untimed warm-ups (as opforge bench lstsq does), then `repeat` timed runs; returns (times_ms, result)."""
    run()
    result = run()
    times_ms = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = run()
        times_ms.append((time.perf_counter() - start) * 1e3)
    return times_ms, result


def bench_numpy_explicit(np, a, x, y, repeat):
    def run():
        return -2 * (a.T @ (y - a @ x))
    times_ms, g = time_runs(run, repeat)
    return times_ms, np.asarray(g)


def bench_torch_autograd(torch, a, x, y, repeat):
    a_t = torch.from_numpy(a)
    y_t = torch.from_numpy(y)
    x_t = torch.from_numpy(x.copy()).requires_grad_(True)

    def run():
        x_t.grad = None
        loss = ((y_t - a_t @ x_t) ** 2).sum()
        loss.backward()
        return x_t.grad

    times_ms, g = time_runs(run, repeat)
    return times_ms, g.detach().numpy()


def relative_error(np, g, g_ref):
    diff = np.max(np.abs(g.astype(np.float64) - g_ref))
    scale = np.max(np.abs(g_ref))
    return float(diff / scale) if scale > 0 else float(diff)


COLUMNS = ("d", "dtype", "method", "median_ms", "min_ms", "rel_err",
           "threads", "peer_version")


def format_cell(key, value):
    if key in ("median_ms", "min_ms"):
        return "%.3f" % value
    if key == "rel_err":
        return "%.2e" % value
    return str(value)


def print_table(rows):
    cells = [[format_cell(k, row[k]) for k in COLUMNS] for row in rows]
    widths = [max([len(k)] + [len(c[i]) for c in cells])
              for i, k in enumerate(COLUMNS)]
    text_columns = ("dtype", "method", "peer_version")

    def line(values):
        parts = []
        for key, value, width in zip(COLUMNS, values, widths):
            parts.append(value.ljust(width) if key in text_columns
                         else value.rjust(width))
        return "  ".join(parts).rstrip()

    print(line(COLUMNS))
    print(line(["-" * w for w in widths]))
    for c in cells:
        print(line(c))


def main(argv=None):
    args = parse_args(argv)
    set_thread_env(args.threads)

    try:
        import numpy as np
    except ImportError as exc:
        note("peers.py: NumPy is not importable (%s); nothing can run." % exc)
        return 1

    torch = None
    methods = list(args.methods)
    if "torch_autograd" in methods:
        try:
            import torch
        except ImportError as exc:
            note("peers.py: PyTorch is not importable (%s); "
                 "skipping torch_autograd rows." % exc)
            methods.remove("torch_autograd")
            if not methods:
                note("peers.py: nothing left to run: --methods asked for torch_autograd only "
                     "(Debian: python3-torch)")
                return 1
        else:
            torch.set_num_threads(args.threads)

    versions = {"numpy_explicit": np.__version__}
    if torch is not None:
        versions["torch_autograd"] = torch.__version__

    rows = []
    for d in args.sizes:
        try:
            a64, x64, y64 = make_data(np, d)
        except MemoryError:
            note("peers.py: out of memory: A for d = %d (%d x %d float64) needs %.1f GiB; give a smaller --sizes"
                 % (d, 10 * d, d, 80.0 * d * d / 2**30))
            return 1
        g_ref = reference_gradient(a64, x64, y64)
        for dtype in args.dtypes:
            # Built once per (d, dtype), contiguous, shared by all methods.
            a = np.ascontiguousarray(a64, dtype=dtype)
            x = np.ascontiguousarray(x64, dtype=dtype)
            y = np.ascontiguousarray(y64, dtype=dtype)
            for method in methods:
                note("d=%d %s %s..." % (d, dtype, method))
                if method == "numpy_explicit":
                    times_ms, g = bench_numpy_explicit(np, a, x, y, args.repeat)
                else:
                    times_ms, g = bench_torch_autograd(torch, a, x, y,
                                                       args.repeat)
                row = {
                    "d": d,
                    "dtype": dtype,
                    "method": method,
                    "median_ms": statistics.median(times_ms),
                    "min_ms": min(times_ms),
                    "rel_err": relative_error(np, g, g_ref),
                    "threads": args.threads,
                    "peer_version": versions[method],
                }
                rows.append(row)
                if args.json:
                    print(json.dumps(row), flush=True)

    if not args.json:
        print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
