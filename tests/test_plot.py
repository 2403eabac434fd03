"""`raftfast bench --plot`: the PNG is written from a BenchResult (synthetic here: no cluster)."""

from __future__ import annotations

import numpy as np
import pytest

from raftfast.kv.bench import BenchConfig, BenchResult

pytest.importorskip("matplotlib")

from raftfast.kv.plot import plot_bench  # noqa: E402


def _result(writes: int, latencies: np.ndarray, per_second) -> BenchResult:
    return BenchResult(BenchConfig(duration=3), writes, 0, 3.0, latencies, list(per_second), {1: 50.0}, 20.0)


def test_plot_writes_a_png(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "bench.png"
    plot_bench(_result(3000, rng.lognormal(np.log(900.0), 0.5, 3000), [900, 1100, 1000]), str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_writes(tmp_path):
    path = tmp_path / "empty.png"
    plot_bench(_result(0, np.array([]), []), str(path))
    assert path.stat().st_size > 0


def test_plot_of_an_open_loop_run(tmp_path):
    rng = np.random.default_rng(2)
    probe = _result(3000, rng.lognormal(np.log(900.0), 0.5, 3000), [900, 1100, 1000])
    result = _result(2400, rng.lognormal(np.log(500.0), 0.5, 2400), [800, 800, 800])
    result.config.rate_fraction = 0.8
    result.offered_rate, result.probe = 800.0, probe
    path = tmp_path / "open.png"
    plot_bench(result, str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
