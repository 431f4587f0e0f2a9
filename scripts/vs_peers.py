#!/usr/bin/python3
"""opforge's fused gradient against PyTorch's autograd, interleaved in time.

`opforge bench lstsq` and `scripts/peers.py` are separate processes, so one run
of each compares two moments of a shared machine whose memory bandwidth can
move 2x between minutes. This script alternates them: round after round it runs
`opforge bench lstsq` (fused, graph and bandwidth) and `peers.py`
(torch_autograd only) on the same sizes, takes each round's ratios torch / fused
and torch / graph, and reports the median ratio over the rounds with its range,
and the fused / read-once ratio the same way. It also reports torch / read-once:
the time PyTorch takes over the time to read A once, which bounds what any
kernel that reads A once can gain on PyTorch in that round.

    /usr/bin/python3 scripts/vs_peers.py --opforge build/bin/opforge --sizes 1000 --rounds 7

Needs NumPy and PyTorch (Debian: python3-numpy, python3-torch). Optional: never
needed to build or test opforge.
"""
import argparse
import json
import os
import statistics
import sys

from opforge_cli import default_opforge, json_rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--opforge", default=default_opforge(), help="the opforge program; default %(default)s")
    p.add_argument("--sizes", default="1000", help="comma-separated d; default %(default)s")
    p.add_argument("--dtype", default="both", choices=("float64", "float32", "both"))
    p.add_argument("--rounds", type=int, default=7, help="alternations; default %(default)s")
    p.add_argument("--repeat", type=int, default=10, help="timed runs per method per round; default %(default)s")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="default: all cores")
    p.add_argument("--json", action="store_true", help="one JSON object per (d, dtype) on stdout")
    a = p.parse_args(argv)
    if a.rounds < 1 or a.repeat < 1 or a.threads < 1:
        p.error("--rounds, --repeat and --threads must be at least 1")
    peers = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers.py")
    notes = set()

    torch_ratio, graph_ratio, read_ratio, torch_read_ratio = {}, {}, {}, {}
    for k in range(a.rounds):
        if k == 1 and not torch_ratio:  # the first round compared nothing: the rest would not either
            break
        print(f"vs_peers: round {k + 1}/{a.rounds}", file=sys.stderr)
        ours, _ = json_rows([a.opforge, "bench", "lstsq", "--sizes", a.sizes, "--dtype", a.dtype, "--repeat",
                             str(a.repeat), "--threads", str(a.threads), "--methods", "fused,graph,bandwidth",
                             "--json"], "vs_peers")
        theirs, said = json_rows([sys.executable, peers, "--sizes", a.sizes, "--dtype", a.dtype, "--repeat",
                                  str(a.repeat), "--threads", str(a.threads), "--methods", "torch_autograd",
                                  "--json"], "vs_peers")
        notes.update(line for line in said.splitlines() if line.strip())
        fused = {(r["d"], r["dtype"]): r for r in ours if r["method"] == "fused"}
        graph = {(r["d"], r["dtype"]): r for r in ours if r["method"] == "graph"}
        read = {(r["d"], r["dtype"]): r for r in ours if r["method"] == "bandwidth"}
        for r in theirs:
            key = (r["d"], r["dtype"])
            if key in fused:
                torch_ratio.setdefault(key, []).append(r["median_ms"] / fused[key]["median_ms"])
                graph_ratio.setdefault(key, []).append(r["median_ms"] / graph[key]["median_ms"])
                read_ratio.setdefault(key, []).append(fused[key]["ratio_bandwidth"])
                torch_read_ratio.setdefault(key, []).append(r["median_ms"] / read[key]["median_ms"])

    if not torch_ratio:
        for line in sorted(notes):
            print(line, file=sys.stderr)
        print("vs_peers: no result: peers.py gave no torch_autograd row to compare with (is PyTorch installed? "
              "Debian: python3-torch)", file=sys.stderr)
        return 1
    for key in sorted(torch_ratio, key=lambda k: (k[1] != "float64", k[0])):
        t, b, gr, tr = torch_ratio[key], read_ratio[key], graph_ratio[key], torch_read_ratio[key]
        if a.json:
            print(json.dumps({"d": key[0], "dtype": key[1], "rounds": len(t),
                              "torch_over_fused_median": statistics.median(t), "torch_over_fused_min": min(t),
                              "torch_over_fused_max": max(t), "torch_over_graph_median": statistics.median(gr),
                              "torch_over_graph_min": min(gr), "torch_over_graph_max": max(gr),
                              "fused_over_read_median": statistics.median(b),
                              "fused_over_read_min": min(b), "fused_over_read_max": max(b),
                              "torch_over_read_median": statistics.median(tr), "torch_over_read_min": min(tr),
                              "torch_over_read_max": max(tr)}))
        else:
            print(f"d={key[0]} {key[1]}: fused is {statistics.median(t):.2f}x faster than torch_autograd "
                  f"(rounds {min(t):.2f}-{max(t):.2f}); fused / read-once {statistics.median(b):.2f} "
                  f"({min(b):.2f}-{max(b):.2f}); graph is {statistics.median(gr):.2f}x torch's speed "
                  f"({min(gr):.2f}-{max(gr):.2f}); torch_autograd / read-once {statistics.median(tr):.2f} "
                  f"({min(tr):.2f}-{max(tr):.2f}), the most any one-read kernel could gain; {len(t)} rounds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
