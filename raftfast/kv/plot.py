"""`raftfast bench --plot FILE.png`: throughput over time and the latency distribution.

matplotlib (in the `bench` extra) is imported only when a plot is asked for, with the Agg
backend, so the CLI and servers never pay for it and no display is needed.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from .bench import BenchResult

__all__ = ["plot_bench"]


def _format_us(value: float) -> str:
    return f"{value / 1000:.2f} ms" if value >= 1000 else f"{value:.0f} µs"


def _tick_us(value: float) -> str:
    return f"{value / 1000:g} ms" if value >= 1000 else f"{value:g} µs"


def plot_bench(result: BenchResult, path: str, title: Optional[str] = None) -> None:
    """Write a PNG of `result`: committed writes per second of the measured window (left) and
    the histogram of write latencies on a log scale with p50/p90/p99/p99.9 marked (right). An
    open-loop result also shows its offered rate (and the probed maximum, if any)."""
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError("--plot needs matplotlib: pip install 'raftfast[bench]'") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    config = result.config
    if title is None:
        where = f"{len(config.targets)} targets" if config.targets else f"{config.nodes}-node local cluster"
        clients = f"{config.clients} client{'s' if config.clients != 1 else ''}"
        if result.offered_rate is None:
            load = f"{clients} x {config.depth} in flight"
        elif result.max_throughput is not None:
            load = (f"open loop, {result.offered_rate:,.0f} writes/s offered "
                    f"({config.rate_fraction:.0%} of {result.max_throughput:,.0f} max), {clients}")
        else:
            load = f"open loop, {result.offered_rate:,.0f} writes/s offered, {clients}"
        title = f"raftfast bench: {where}, {load}, {config.value_size}-byte values"
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [1.1, 1]})
    fig.suptitle(title, fontsize=12)

    # throughput over time
    per_second = np.asarray(result.per_second, dtype=float)
    if len(per_second):
        seconds = np.arange(1, len(per_second) + 1)
        left.bar(seconds, per_second, width=0.85, color="#4C72B0", label="writes in that second")
        left.set_xlim(0.4, len(per_second) + 0.6)
        left.xaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        left.text(0.5, 0.5, "no whole second measured", ha="center", va="center", transform=left.transAxes)
    left.axhline(result.throughput, color="#C44E52", linestyle="--", linewidth=1.5,
                 label=f"mean {result.throughput:,.0f} writes/s")
    if result.offered_rate is not None:
        left.axhline(result.offered_rate, color="#333333", linestyle=":", linewidth=1.5,
                     label=f"offered {result.offered_rate:,.0f} writes/s")
    left.set_xlabel("second of the measured window")
    left.set_ylabel("committed writes/s")
    left.set_title("throughput over time")
    top = max([result.throughput, result.offered_rate or 0.0, *per_second])
    if top > 0:
        left.set_ylim(0, top * 1.3)  # headroom for the legend
        left.yaxis.set_major_locator(MaxNLocator(integer=True))
        left.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    left.legend(loc="upper center", ncol=2, fontsize=9, framealpha=0.9)
    left.grid(axis="y", alpha=0.3)

    # latency distribution
    latencies = np.asarray(result.latencies_us, dtype=float)
    latencies = latencies[latencies > 0]
    if len(latencies):
        lo, hi = latencies.min(), latencies.max()
        bins = np.logspace(np.log10(lo), np.log10(hi * 1.001) if hi > lo else np.log10(lo) + 0.1, 60)
        counts, _, _ = right.hist(latencies, bins=bins, color="#55A868", alpha=0.85)
        right.set_xscale("log")
        right.set_ylim(0, max(counts.max(), 1) * 1.35)  # headroom for the legend
        colors = ("#333333", "#8172B2", "#C44E52", "#DD8452")
        for (p, value), color in zip(result.percentiles.items(), colors):
            right.axvline(value, color=color, linestyle="--", linewidth=1.3, label=f"p{p:g} {_format_us(value)}")
        right.legend(loc="upper center", ncol=2, fontsize=9, framealpha=0.9)
        right.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        right.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _tick_us(v)))
        right.xaxis.set_minor_formatter(NullFormatter())
        right.yaxis.set_major_locator(MaxNLocator(integer=True))
        right.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    else:
        right.text(0.5, 0.5, "no acknowledged writes", ha="center", va="center", transform=right.transAxes)
    right.set_xlabel("write latency (log scale)" if result.offered_rate is None
                     else "write latency from its scheduled send time (log scale)")
    right.set_ylabel("writes")
    right.set_title(f"latency distribution ({result.writes:,} writes, {result.errors} errors)")
    right.grid(axis="y", alpha=0.3)

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
