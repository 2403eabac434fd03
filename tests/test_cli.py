"""The `raftfast` command: flag errors exit 2 with a clear message; the commands work against
a real cluster of processes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

import raftfast
from raftfast.cli import main
from raftfast.runtime.cluster import LocalCluster

pytestmark = pytest.mark.timeout(90)

PEERS = "1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003"


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "required: COMMAND"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["serve", "--peers", PEERS, "--data-dir", "d"], "required: --id"),
        (["serve", "--id", "0", "--peers", PEERS, "--data-dir", "d"], "0 is below the minimum of 1"),
        (["serve", "--id", "one", "--peers", PEERS, "--data-dir", "d"], "'one' is not an integer"),
        (["serve", "--id", "1", "--peers", "1=localhost", "--data-dir", "d"], "is not HOST:PORT"),
        (["serve", "--id", "1", "--peers", "1=h:99999", "--data-dir", "d"], "outside 1..65535"),
        (["serve", "--id", "1", "--peers", "1=h:1,1=h:2", "--data-dir", "d"], "listed twice"),
        (["serve", "--id", "4", "--peers", PEERS, "--data-dir", "d"], "--peers must include this node"),
        (["serve", "--id", "1", "--peers", PEERS], "required: --data-dir"),
        (["serve", "--id", "1", "--peers", PEERS, "--data-dir", "d", "--tick-ms", "-1"], "must be positive"),
        (["serve", "--id", "1", "--peers", PEERS, "--data-dir", "d", "--election-timeout", "30,15"],
         "election_timeout range [30, 15) is empty or inverted"),
        (["serve", "--id", "1", "--peers", PEERS, "--data-dir", "d", "--election-timeout", "x"], "is not LO,HI"),
        (["serve", "--id", "1", "--peers", PEERS, "--data-dir", "d", "--heartbeat", "20"],
         "heartbeat_interval (20) must be below the election timeout (15)"),
        (["serve", "--id", "1", "--peers", PEERS, "--data-dir", "d", "--snapshot-bytes", "-1"],
         "-1 is below the minimum of 0"),
        (["serve", "--id", "1", "--peers", PEERS, "--data-dir", "d", "--snapshot-bytes", "64M"],
         "'64M' is not an integer"),
        (["cluster", "--nodes", "0"], "0 is below the minimum of 1"),
        (["cluster", "--base-port", "70000"], "not a port"),
        (["cluster", "--base-port", "65000"], "leaves no room"),
        (["kv", "put", "onlykey"], "required: VALUE"),
        (["kv", "get"], "required: KEY"),
        (["kv", "cas", "k", "v"], "takes KEY OLD NEW"),
        (["kv", "cas", "--absent", "k", "old", "new"], "takes --absent KEY NEW"),
        (["kv", "get", "k", "--absent"], "unrecognized arguments: --absent"),
        (["kv", "frob", "k"], "invalid choice: 'frob'"),
        (["kv", "get", "k", "--target", "nohost"], "is not HOST:PORT"),
        (["kv", "get", "k", "--timeout", "0"], "must be positive"),
        (["status", "--target", "h:0"], "outside 1..65535"),
        (["member", "add", "x"], "'x' is not an integer"),
        (["member", "demote", "2"], "invalid choice: 'demote'"),
        (["wal"], "required: COMMAND"),
        (["bench", "--clients", "0"], "0 is below the minimum of 1"),
        (["bench", "--duration", "0"], "must be positive"),
        (["bench", "--value-size", "-1"], "-1 is below the minimum of 0"),
        (["bench", "--target", "127.0.0.1"], "is not HOST:PORT"),
        (["bench", "--rate", "lots"], "'lots' is not a rate"),
        (["bench", "--rate", "80%%"], "'80%%' is not a rate"),
        (["bench", "--rate", "%"], "'%' is not a rate"),
        (["bench", "--rate", "0"], "'0' must be a positive, finite rate"),
        (["bench", "--rate", "0%"], "'0%' must be a positive, finite rate"),
        (["bench", "--rate", "-5000"], "'-5000' must be a positive, finite rate"),
        (["bench", "--rate=-10%"], "'-10%' must be a positive, finite rate"),
        (["bench", "--rate", "nan"], "'nan' must be a positive, finite rate"),
        (["bench", "--rate", "inf"], "'inf' must be a positive, finite rate"),
        (["bench", "--rate", "100.5%"], "'100.5%' is above 100% of the maximum"),
        (["bench", "--rate", "150%"], "'150%' is above 100% of the maximum"),
        (["bench", "--rate"], "expected one argument"),
        (["bench", "--rate", "80%", "--one-at-a-time"], "--rate and --one-at-a-time exclude each other"),
        (["bench", "--sync", "later"], "invalid choice: 'later'"),
        (["bench", "--sync", "pipelined", "--target", "127.0.0.1:8001"], "--sync applies to the local cluster"),
    ],
)
def test_bad_flags_exit_2_with_a_clear_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert "usage: raftfast" in err


def test_commands_against_a_cluster_of_processes(tmp_path, capsys):
    with LocalCluster(3, data_dir=str(tmp_path), base_port=0) as cluster:
        target = ["--target", cluster.client_addresses[1]]
        assert main(["kv", "put", "greeting", "hello", *target]) == 0
        assert main(["kv", "get", "greeting", *target]) == 0
        assert capsys.readouterr().out == "ok\nhello\n"
        assert main(["kv", "get", "missing", *target]) == 1
        assert main(["kv", "cas", "greeting", "hello", "bye", *target]) == 0
        assert main(["kv", "cas", "greeting", "hello", "again", *target]) == 1
        assert main(["kv", "cas", "--absent", "fresh", "1", *target]) == 0
        assert main(["kv", "append", "greeting", "!", *target]) == 0
        assert main(["kv", "delete", "fresh", *target]) == 0
        assert main(["kv", "get", "greeting", *target]) == 0
        assert capsys.readouterr().out.splitlines()[-1] == "bye!"
        assert main(["status", "--json", *target]) == 0
        rows = json.loads(capsys.readouterr().out)
        assert sorted(r["id"] for r in rows) == [1, 2, 3]  # found from one address
        assert [r["role"] for r in rows].count("leader") == 1
        assert {tuple(r["members"]) for r in rows} == {(1, 2, 3)}
        assert main(["status", *target]) == 0
        assert "raftfast cluster status" in capsys.readouterr().out


def test_wal_inspect_reads_a_nodes_wal(tmp_path):
    pytest.importorskip("raftfast.wal.inspect")
    from raftfast.kv.server import KVServer, ServerOptions
    from raftfast.runtime.address import Address
    from raftfast.runtime.loop import run

    async def write_some():
        server = KVServer(ServerOptions(node_id=1, peers={1: Address("127.0.0.1", 0)}, data_dir=str(tmp_path)))
        await server.start()
        await server.stop()

    run(write_some())
    assert main(["wal", "inspect", str(tmp_path / "wal")]) == 0


def test_status_reports_unreachable_nodes(capsys):
    assert main(["status", "--json", "--timeout", "0.2", "--target", "127.0.0.1:1"]) == 1
    [row] = json.loads(capsys.readouterr().out)
    assert row["address"] == "127.0.0.1:1" and "error" in row


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize(
    "stop, preexec",
    [
        (signal.SIGTERM, None),
        # `raftfast cluster &` in a script: the shell starts it with SIGINT ignored, and
        # Python raises no KeyboardInterrupt then; `kill -INT` must still stop it.
        (signal.SIGINT, _ignore_sigint),
    ],
    ids=["sigterm", "sigint-inherited-ignored"],
)
def test_cluster_command_starts_prints_and_stops_on_a_signal(tmp_path, stop, preexec):
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(raftfast.__file__)))
    process = subprocess.Popen(
        [sys.executable, "-m", "raftfast.cli", "cluster", "--nodes", "3", "--base-port", "0",
         "--data-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, preexec_fn=preexec,
    )
    lines = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        lines.append(line)
        if "Ctrl-C stops the cluster" in line or not line:
            break
    nodes = [l for l in lines if re.match(r"\s+node \d: peers 127\.0\.0\.1:\d+\s+clients 127\.0\.0\.1:\d+", l)]
    assert len(nodes) == 3, lines
    pids = [int(re.search(r"pid (\d+)", l).group(1)) for l in nodes]
    try:
        process.send_signal(stop)
        assert process.wait(20) == 0
        assert "stopping the cluster" in process.stdout.read()
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:  # a failure leaves no cluster behind
        for pid in [process.pid, *pids]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        process.wait()


def test_bench_measures_a_local_cluster(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--duration", "1", "--warmup", "0.5", "--clients", "4", "--depth", "4",
                 "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "committed writes/s" in table and "latency p99.9" in table and "CPU node 3" in table
    result = json.loads(out.read_text())
    assert result["writes"] > 0 and result["throughput_per_s"] > 0 and result["errors"] == 0
    assert set(result["latency_us"]) == {"p50", "p90", "p99", "p99.9"}


def test_bench_data_dir_must_be_a_directory(tmp_path, capsys):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--data-dir", str(not_a_dir)])
    assert exit_info.value.code == 2
    assert f"--data-dir {not_a_dir} is not a directory" in capsys.readouterr().err


def test_bench_creates_a_missing_data_dir(tmp_path, capsys):
    data_dir = tmp_path / "new" / "wals"
    assert main(["bench", "--duration", "0.3", "--warmup", "0.1", "--clients", "2", "--depth", "2",
                 "--data-dir", str(data_dir)]) == 0
    assert "committed writes/s" in capsys.readouterr().out
    assert data_dir.is_dir() and not any(data_dir.iterdir())  # the run's WALs were removed after


def test_bench_open_loop_at_a_share_of_the_maximum(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--rate", "50%", "--duration", "0.3", "--warmup", "0.1", "--clients", "4",
                 "--depth", "8", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "closed loop (maximum)" in table and "open loop at 50%" in table and "offered writes/s" in table
    result = json.loads(out.read_text())
    probe = result["probe"]
    assert result["mode"] == "open" and probe["mode"] == "closed" and probe["writes"] > 0
    assert result["max_throughput_per_s"] == probe["throughput_per_s"]
    assert result["offered_per_s"] == pytest.approx(0.5 * probe["throughput_per_s"])
    assert result["config"]["rate_fraction"] == 0.5
    assert result["writes"] > 0 and result["errors"] == 0 and result["scheduled"] > 0
    assert isinstance(result["kept_up"], bool)  # whether it did is the machine's business, not the test's
    assert set(result["latency_us"]) == {"p50", "p90", "p99", "p99.9"}


def test_bench_one_at_a_time_over_pipelined_fsyncs(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--one-at-a-time", "--sync", "pipelined", "--duration", "0.5", "--warmup", "0.2",
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["config"]["serve_args"] == ["--sync", "pipelined"]
    assert result["writes"] > 0 and result["errors"] == 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--raftfast-depth", "0"], "--raftfast-depth must be at least 1"),
        (["--raftfast-clients", "-3"], "--raftfast-clients must be at least 1"),
        (["--raftfast-depth", "many"], "invalid int value: 'many'"),
    ],
)
def test_peer_comparison_rejects_bad_flags_before_running_anything(argv, message):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-m", "benchmarks.peers", *argv], cwd=root,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and message in done.stderr, done.stderr
