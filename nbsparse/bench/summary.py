"""``python -m nbsparse.bench.summary RUN.json ... [--before RUN.json ...]``: medians over runs.

Each ratio is taken within its own run (nbsparse against the peers timed in that
same process), then the median over runs is reported with the spread (min-max).
With ``--before``, the last column is the median time before over the median time
now (the gain of the change).
"""

import argparse
import json
import statistics


def _load(paths):
    runs = []
    for path in paths:
        with open(path) as f:
            runs.append(json.load(f))
    cases = {}
    for run in runs:
        for r in run["results"]:
            cases.setdefault((r["op"], r["workload"], r["dtype"]), []).append(r)
    return cases


def _med(rows, key):
    values = [r[key] for r in rows if r.get(key) is not None]
    return (statistics.median(values), min(values), max(values)) if values else (None, None, None)


def table(paths, before=()):
    """Markdown table lines: per case, the medians over the runs in ``paths``."""
    now, then = _load(paths), _load(before) if before else {}
    head = ("| op | workload | dtype | ms | speed-up over best peer (spread) | best peer | x Theano "
            "| x roofline | x dense GEMM |" + (" before ms | before speed-up | gain |" if then else ""))
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for key, rows in now.items():
        ms = _med(rows, "ours_ms")[0]
        sp, lo, hi = _med(rows, "speedup_best_peer")
        peers = statistics.mode(r["best_peer"] for r in rows)
        line = (f"| {key[0]} | {key[1]} | {key[2]} | {ms:.2f} | {sp:.2f} ({lo:.2f}-{hi:.2f}) | {peers} "
                f"| {_fmt(_med(rows, 'speedup_theano')[0], '.1f')} | {_med(rows, 'x_roofline')[0]:.2f} "
                f"| {_med(rows, 'x_dense_gemm')[0]:.2f} |")
        if then:
            old = _med(then.get(key, []), "ours_ms")[0]
            old_speedup = _med(then.get(key, []), "speedup_best_peer")[0]
            line += f" {_fmt(old, '.2f')} | {_fmt(old_speedup, '.2f')} | {_fmt(old / ms if old else None, '.2f')} |"
        lines.append(line)
    return lines


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m nbsparse.bench.summary", description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="JSON files written by python -m nbsparse.bench --json")
    parser.add_argument("--before", nargs="*", default=(), help="JSON files of the runs to compare with")
    args = parser.parse_args(argv)
    print("\n".join(table(args.runs, args.before)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
