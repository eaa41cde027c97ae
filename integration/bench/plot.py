"""Latency distributions as a PNG. Runs in the bench venv (matplotlib), from bench.json.

Usage: python -m integration.bench.plot BENCH_JSON OUT_PNG
Imports only the standard library and matplotlib, so the product venv needs neither.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any


def _x(percentile: float) -> float:
    """Percentile on the 'nines' axis: 90 -> 10, 99 -> 100, 99.9 -> 1000."""
    return 1.0 / (1.0 - min(percentile, 99.999) / 100.0)


def draw(data: dict[str, Any], out_png: str) -> None:
    import matplotlib  # type: ignore[import-not-found, unused-ignore]

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]

    groups = [
        (kind, c)
        for kind in ("http", "https")
        for c in data["config"]["connections"]
        if any(r["connections"] == c for r in data.get(kind, []))
    ]
    if not groups:
        raise SystemExit("nothing to plot")
    cols = 2
    rows = math.ceil(len(groups) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(13, 4.8 * rows), squeeze=False)
    for ax, (kind, c) in zip(axes.flat, groups, strict=False):
        for r in data[kind]:
            if r["connections"] != c or not r["percentiles_us"]:
                continue
            pts = sorted((float(p), v / 1000.0) for p, v in r["percentiles_us"].items())
            ax.plot([_x(p) for p, _ in pts], [v for _, v in pts], marker=".", label=r["target"])
        client = "wrk" if kind == "http" else "Python asyncio client (not comparable to wrk)"
        ax.set_title(f"{kind.upper()}, {c} keep-alive connection(s) - {client}", fontsize=10)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ticks = [1, 2, 10, 100, 1000, 10000]
        ax.set_xticks(ticks)
        ax.set_xticklabels(["0", "50", "90", "99", "99.9", "99.99"])
        ax.set_xlabel("percentile")
        ax.set_ylabel("latency (ms)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(groups) :]:
        ax.axis("off")
    fig.suptitle("openshell-supervisor proxy vs nginx direct, tinyproxy, mitmproxy (127.0.0.1)")
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[0]) as f:
        draw(json.load(f), argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
