"""The `raftfast` command: run nodes and local clusters, talk to a cluster, load-test it.

    raftfast serve --id 1 --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003 --data-dir d1
    raftfast cluster --nodes 3 [--tls DIR]
    raftfast certs init DIR --nodes 3
    raftfast kv put KEY VALUE | get KEY | delete KEY | append KEY VALUE | cas KEY OLD NEW
    raftfast status
    raftfast member add|remove|add-learner|promote ID
    raftfast wal inspect DIR
    raftfast bench [--nodes 3] [--clients 64] [--duration 10] [--rate N|P%] [--json FILE] [--plot FILE.png]
    raftfast chaos [--nodes 3|5] [--duration S] [--nemesis NAME,...|all] [--seed N] [--runs N]

Exit codes: 0 success, 1 the operation failed, 2 bad usage (argparse's convention).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import signal
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .runtime.address import CLIENT_PORT_OFFSET, Address, parse_address, parse_peers
from .security import cli as security_cli

DEFAULT_TARGETS = [f"127.0.0.1:{7001 + i + CLIENT_PORT_OFFSET}" for i in range(3)]
SYNC_MODES = ("inline", "pipelined")  # `serve --sync`, also passed on by bench and chaos

# -- argument types: each raises ArgumentTypeError, which argparse turns into exit code 2 ------


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below the minimum of {minimum}")
        return value

    parse.__name__ = "integer"
    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} must be positive")
    return value


def _rate(text: str) -> Tuple[float, bool]:
    """`--rate`: writes/s ("50000") or a percentage of the probed maximum ("80%"), as
    (writes/s, False) or (fraction, True)."""
    number = text.strip()
    percent = number.endswith("%")
    if percent:
        number = number[:-1].strip()
    try:
        value = float(number)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a rate: writes/s (e.g. 50000) or a percentage of the maximum (e.g. 80%)") from None
    if not math.isfinite(value) or not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive, finite rate")
    if percent:
        if value > 100:
            raise argparse.ArgumentTypeError(f"{text!r} is above 100% of the maximum")
        return value / 100.0, True
    return value, False


def _port(text: str) -> int:
    value = _int_at_least(0)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port (0..65535)")
    return value


def _address(text: str) -> Address:
    try:
        return parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _peers(text: str) -> Dict[int, Address]:
    try:
        return parse_peers(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _range(text: str) -> tuple:
    try:
        lo, hi = (int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not LO,HI (ticks)") from None
    return lo, hi


def _targets(values: Optional[List[Address]]) -> List[str]:
    return [str(v) for v in values] if values else list(DEFAULT_TARGETS)


def _add_targets(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--target", action="append", type=_address, metavar="HOST:PORT",
        help=f"client address of a node to {what} (repeatable; default: the ports of "
             f"`raftfast cluster`, {', '.join(DEFAULT_TARGETS)})",
    )


# -- serve ---------------------------------------------------------------------------------------


def _serve(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .kv.server import KVServer, ServerOptions
    from .runtime.loop import LOOP_NAME, run

    if args.id not in args.peers:
        parser.error(f"--peers must include this node (--id {args.id}): that is where it listens")
    tls = security_cli.server_tls(args, parser, [args.peers[args.id].host])
    logging.basicConfig(
        level=args.log_level.upper(),
        format=f"%(asctime)s node {args.id} %(levelname)s %(name)s: %(message)s",
    )
    options = ServerOptions(
        node_id=args.id, peers=args.peers, data_dir=args.data_dir, cluster_id=args.cluster_id,
        client_port=args.client_port, tick_interval=args.tick_ms / 1000.0,
        election_timeout=args.election_timeout, heartbeat_interval=args.heartbeat,
        snapshot_threshold=args.snapshot_threshold, snapshot_bytes=args.snapshot_bytes, join=args.join,
        max_request=args.max_request, pipelined_sync=args.sync == "pipelined",
        tls=tls, token_file=args.token_file, admin_token_file=args.admin_token_file,
        max_pending=args.max_pending, request_timeout=args.request_timeout,
    )
    try:
        server = KVServer(options)
    except ValueError as exc:  # RaftConfig names the field
        parser.error(str(exc))

    async def main() -> int:
        from .runtime.faults import FaultHook

        FaultHook.from_environment(server.raft)  # chaos testing only: needs RAFTFAST_FAULTS
        await server.start()
        print(f"node {args.id} serving: peers on {server.peer_address}, clients on "
              f"{server.client_address} (cluster {args.cluster_id!r}, {LOOP_NAME}, "
              f"{'TLS' if tls is not None else 'no TLS'})", flush=True)
        loop = asyncio.get_running_loop()
        stop = loop.create_future()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
        closed = loop.create_task(server.wait_closed())
        await asyncio.wait([stop, closed], return_when=asyncio.FIRST_COMPLETED)
        if closed.done() and closed.exception() is not None:
            print(f"node {args.id} failed: {closed.exception()}", file=sys.stderr)
            await server.stop()
            return 1
        await server.stop()
        closed.cancel()
        return 0

    return run(main())


# -- cluster -------------------------------------------------------------------------------------


def _cluster(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .runtime.cluster import LocalCluster

    if args.base_port and args.base_port + args.nodes - 1 + CLIENT_PORT_OFFSET > 65535:
        parser.error(f"--base-port {args.base_port} leaves no room for {args.nodes} nodes")
    tls = security_cli.local_cluster_tls(args, parser, args.nodes)
    serve_args = ["--tick-ms", str(args.tick_ms), "--log-level", args.log_level, *security_cli.token_args(args)]
    if args.insecure:
        serve_args.append("--insecure")
    cluster = LocalCluster(args.nodes, data_dir=args.data_dir, base_port=args.base_port,
                           host=args.host, cluster_id=args.cluster_id, serve_args=serve_args, tls=tls)
    stopping = []
    # SIGINT too, explicitly: started in the background by a shell without job control, this
    # process inherits SIGINT ignored, Python then raises no KeyboardInterrupt, and `kill -INT`
    # would leave the cluster running.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.append(True))
    try:
        cluster.start()
    except (RuntimeError, TimeoutError, OSError) as exc:
        print(f"raftfast cluster: {exc}", file=sys.stderr)
        cluster.stop()
        return 1
    print(f"cluster {args.cluster_id!r}: {args.nodes} nodes, data in {cluster.data_dir}")
    for node in cluster.nodes:
        print(f"  node {node.id}: peers {node.peer_address}  clients {node.client_address}  "
              f"pid {node.pid}  log {node.log_path}")
    secure = f" --tls {args.tls}" if args.tls else f" --tls-ca {tls.ca} --tls-cert ... --tls-key ..." if tls else ""
    print(f"try: raftfast kv put hello world --target {cluster.nodes[0].client_address}{secure}")
    print("Ctrl-C stops the cluster.", flush=True)
    code = 0
    while not stopping:
        dead = [n for n in cluster.nodes if n.process is not None and n.process.poll() is not None]
        if dead:
            print(f"node {dead[0].id} exited with code {dead[0].process.returncode}; "
                  f"see {dead[0].log_path}", file=sys.stderr)
            code = 1
            break
        time.sleep(0.2)
    print("stopping the cluster...", flush=True)
    cluster.stop()
    if args.data_dir is None:
        cluster.cleanup()
    return code


# -- kv, status, member -------------------------------------------------------------------------


def _client_options(args: argparse.Namespace, parser: argparse.ArgumentParser, admin: bool = False) -> Dict[str, Any]:
    """KVClient's ssl/token options from the credential flags (none for a plaintext cluster)."""
    credentials = security_cli.client_credentials(args, parser, admin=admin)
    try:
        return credentials.client_options() if credentials is not None else {}
    except (ValueError, OSError) as exc:  # an unreadable certificate, key or token
        parser.error(str(exc))


async def _with_client(args: argparse.Namespace, action, options: Dict[str, Any]) -> Any:
    from .kv.client import KVClient

    async with KVClient(_targets(args.target), timeout=args.timeout, **options) as client:
        return await action(client)


def _kv(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .kv.errors import KVError
    from .runtime.loop import run

    op = args.op
    if op == "cas" and len(args.values) != (2 if args.absent else 3):
        parser.error("takes --absent KEY NEW" if args.absent else "takes KEY OLD NEW (or --absent KEY NEW)")

    async def action(client):
        if op == "get":
            return await client.get(args.key)
        if op == "put":
            return await client.put(args.key, args.value)
        if op == "append":
            return await client.append(args.key, args.value)
        if op == "delete":
            return await client.delete(args.key)
        if args.absent:
            key, new = args.values
            return await client.cas(key, None, new)
        key, old, new = args.values
        return await client.cas(key, old, new)

    options = _client_options(args, parser)
    try:
        result = run(_with_client(args, action, options))
    except KVError as exc:
        print(f"raftfast kv {op}: {exc}", file=sys.stderr)
        return 1
    if op == "get":
        if result is None:
            print("(absent)", file=sys.stderr)
            return 1
        sys.stdout.buffer.write(result + b"\n")
        return 0
    if op == "cas":
        print("ok" if result else "failed: the value was not the expected one")
        return 0 if result else 1
    print("ok")
    return 0


async def _gather_status(targets: List[str], timeout: float, options: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Status of every node reachable from `targets`, following the addresses they report."""
    from .kv.client import KVClient

    seen: Dict[str, Dict[str, Any]] = {}
    queue = list(targets)
    while queue:
        batch = [t for t in dict.fromkeys(queue) if t not in seen]
        queue = []

        async def one(address: str) -> Dict[str, Any]:
            client = KVClient([address], timeout=timeout, **options)
            try:
                return await client.status()
            except Exception as exc:  # any failure is reported in the row
                return {"error": f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__}
            finally:
                await client.close()

        for address, status in zip(batch, await asyncio.gather(*map(one, batch))):
            seen[address] = status
            queue.extend(status.get("client_addresses", {}).values())
    by_id: Dict[Any, Dict[str, Any]] = {}
    rows = []
    for address, status in seen.items():
        status = dict(status, address=address)
        if "id" in status:
            by_id.setdefault(status["id"], status)
        else:
            rows.append(status)
    return sorted(by_id.values(), key=lambda s: s["id"]) + rows


def _status(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from rich.console import Console
    from rich.table import Table

    from .runtime.loop import run

    rows = run(_gather_status(_targets(args.target), args.timeout, _client_options(args, parser)))
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        table = Table(title="raftfast cluster status")
        for column in ("node", "address", "role", "term", "leader", "commit", "applied", "last",
                       "members", "learners"):
            table.add_column(column, justify="right" if column in ("term", "commit", "applied", "last") else "left")
        for row in rows:
            if "error" in row:
                table.add_row("?", row["address"], f"[red]unreachable[/red] ({row['error']})")
                continue
            table.add_row(
                str(row["id"]), row["address"], row["role"], str(row["term"]), str(row["leader"]),
                str(row["commit_index"]), str(row["applied_index"]), str(row["last_index"]),
                ",".join(map(str, row["members"])), ",".join(map(str, row["learners"])) or "-",
            )
        Console().print(table)
    return 0 if any("error" not in r for r in rows) else 1


def _member(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .kv.errors import KVError
    from .runtime.loop import run

    method = {"add": "add_server", "remove": "remove_server", "add-learner": "add_learner",
              "promote": "promote_learner", "transfer": "transfer_leadership"}[args.change]
    options = _client_options(args, parser, admin=True)
    try:
        run(_with_client(args, lambda client: getattr(client, method)(args.node_id), options))
    except KVError as exc:
        print(f"raftfast member {args.change}: {exc}", file=sys.stderr)
        return 1
    print("ok")
    return 0


# -- wal -----------------------------------------------------------------------------------------


def _wal(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .wal import inspect

    return inspect.main([args.dir, *args.rest])


# -- bench ---------------------------------------------------------------------------------------


def _bench(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.table import Table

    from .kv.bench import BenchConfig, BenchResult, run_bench

    if args.rate is not None and args.one_at_a_time:
        parser.error("--rate and --one-at-a-time exclude each other: one write in flight is a closed loop")
    if args.plot:
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:  # say so before a long run, not after
            print("raftfast bench: --plot needs matplotlib: pip install 'raftfast[bench]'", file=sys.stderr)
            return 1
    if args.sync != "inline" and args.target:
        parser.error("--sync applies to the local cluster bench starts, not to --target nodes")
    if args.data_dir is not None and os.path.exists(args.data_dir) and not os.path.isdir(args.data_dir):
        parser.error(f"--data-dir {args.data_dir} is not a directory")
    if args.tls and not args.target:
        security_cli.ensure_cert_dir(args.tls, args.nodes, parser)
    serve_args = ["--sync", args.sync]
    if args.one_at_a_time:
        config = BenchConfig.one_at_a_time(
            nodes=args.nodes, duration=args.duration, warmup=args.warmup,
            value_size=args.value_size, targets=_targets(args.target) if args.target else [],
            data_dir=args.data_dir, tls_dir=args.tls, serve_args=serve_args,
        )
    else:
        rate, fraction = (None, None)
        if args.rate is not None:
            value, is_fraction = args.rate
            rate, fraction = (None, value) if is_fraction else (value, None)
        config = BenchConfig(
            nodes=args.nodes, clients=args.clients, depth=args.depth, duration=args.duration,
            warmup=args.warmup, value_size=args.value_size,
            targets=_targets(args.target) if args.target else [],
            load_processes=args.load_processes, data_dir=args.data_dir, tls_dir=args.tls,
            rate=rate, rate_fraction=fraction, serve_args=serve_args,
        )
    console = Console(stderr=True)
    where = ", ".join(config.targets) if config.targets else f"a local {config.nodes}-node cluster (WAL, fsync on)"
    where += ", TLS on" if config.tls_dir else ""
    if config.rate is None and config.rate_fraction is None:
        load = f"{config.clients} clients x {config.depth} in flight"
    else:
        offered = f"{config.rate:,.0f} writes/s" if config.rate else f"{config.rate_fraction:.0%} of the maximum"
        load = f"open loop at {offered} over {config.clients} clients (at most {config.depth} in flight each)"
    console.print(f"raftfast bench: {load}, {config.value_size}-byte values, {config.duration:g} s against {where}")
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[rate]}"),
                  TimeRemainingColumn(), console=console, transient=False) as bar:
        task = bar.add_task("starting", total=config.duration, rate="")
        current = config.duration  # of the run going on: a probe first with --rate P%

        def phase(description: str, duration: float) -> None:
            nonlocal current
            current = duration
            bar.reset(task, total=duration, description=description, rate="")

        def progress(elapsed: float, done: int, errors: int) -> None:
            rate = done / elapsed if elapsed > 0 else 0.0
            bar.update(task, completed=min(elapsed, current), rate=f"{rate:,.0f} writes/s, {errors} errors")

        try:
            result = run_bench(config, progress, phase)
        except (RuntimeError, TimeoutError, OSError) as exc:
            console.print(f"[red]raftfast bench failed:[/red] {exc}")
            return 1
        bar.update(task, completed=current)

    def us(value: float) -> str:
        return f"{value / 1000:.2f} ms" if value >= 1000 else f"{value:.0f} us"

    runs: List[BenchResult] = [result] if result.probe is None else [result.probe, result]
    table = Table(title="raftfast bench")
    table.add_column("metric")
    for run in runs:
        if run.offered_rate is None:
            heading = "closed loop (maximum)" if len(runs) > 1 else "value"
        elif config.rate_fraction is not None:
            heading = f"open loop at {config.rate_fraction:.0%}"
        else:
            heading = "open loop"
        table.add_column(heading, justify="right")

    def row(name: str, cell) -> None:
        table.add_row(name, *(cell(run) for run in runs))

    open_loop = result.offered_rate is not None
    if open_loop:
        row("offered writes/s", lambda r: "-" if r.offered_rate is None else f"{r.offered_rate:,.0f}")
    row("achieved writes/s" if open_loop else "committed writes/s", lambda r: f"{r.throughput:,.0f}")
    row("writes", lambda r: f"{r.writes:,}")
    for p in result.percentiles:
        row(f"latency p{p:g}", lambda r, p=p: us(r.percentiles[p]))
    row("errors", lambda r: str(r.errors))
    if open_loop:
        row("held back by the in-flight cap", lambda r: "-" if r.offered_rate is None else f"{r.held_back:,}")
        row("unfinished after the window", lambda r: "-" if r.offered_rate is None else f"{r.unfinished:,}")
        row("generator lateness p99 / max", lambda r: "-" if not r.pacer_lag_us
            else f"{us(r.pacer_lag_us[1])} / {us(r.pacer_lag_us[2])}")
    for node in sorted(result.cpu):
        row(f"CPU node {node}", lambda r, node=node: f"{r.cpu[node]:.0f}%" if node in r.cpu else "-")
    row("CPU load generator", lambda r: f"{r.load_cpu:.0f}%")
    if result.cpu_per_write is not None:
        row("CPU per write (all processes)", lambda r: "-" if r.cpu_per_write is None else f"{r.cpu_per_write:.1f} us")
    Console().print(table)
    if open_loop:
        if result.probe is not None:
            console.print(f"maximum {result.probe.throughput:,.0f} writes/s (closed loop, {result.probe.elapsed:.0f} s); "
                          f"offered {config.rate_fraction:.0%} of it: {result.offered_rate:,.0f} writes/s")
        if result.kept_up:
            console.print(f"open loop: latency from each write's scheduled send time; the cluster kept up "
                          f"({result.throughput:,.0f} of {result.offered_rate:,.0f} writes/s offered)")
        else:
            console.print(f"[red]the cluster could not keep up:[/red] it achieved {result.throughput:,.0f} of "
                          f"{result.offered_rate:,.0f} writes/s offered, {result.unfinished:,} writes unfinished; "
                          f"writes waited in the load generator for a slot, and the latencies above include that wait")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result.to_dict(), f, indent=2)
    if args.plot:
        from .kv.plot import plot_bench

        try:
            plot_bench(result, args.plot)
        except (RuntimeError, OSError) as exc:
            console.print(f"[red]raftfast bench: no plot:[/red] {exc}")
            return 1
        console.print(f"plot written to {args.plot}")
    return 0


# -- chaos ---------------------------------------------------------------------------------------


def _nemeses(text: str) -> List[str]:
    from .chaos.nemesis import parse_nemeses

    try:
        return parse_nemeses(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _chaos(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .chaos.command import main as chaos_main

    return chaos_main(args)


# -- the parser ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raftfast", description="raftfast: Raft consensus for Python")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run one node of a key-value cluster")
    serve.add_argument("--id", type=_int_at_least(1), required=True, help="this node's id")
    serve.add_argument("--peers", type=_peers, required=True, metavar="ID=HOST:PORT,...",
                       help="peer addresses of the initial members, this node included")
    serve.add_argument("--data-dir", required=True, help="directory for this node's WAL")
    serve.add_argument("--client-port", type=_port, help=f"client port (default: peer port + {CLIENT_PORT_OFFSET})")
    serve.add_argument("--cluster-id", default="raftfast", help="peers of another cluster id are refused")
    serve.add_argument("--join", action="store_true",
                       help="start with no membership; wait to be added (raftfast member add)")
    serve.add_argument("--tick-ms", type=_positive_float, default=10.0, help="milliseconds per tick (10)")
    serve.add_argument("--election-timeout", type=_range, default=(15, 30), metavar="LO,HI",
                       help="election timeout range in ticks (15,30)")
    serve.add_argument("--heartbeat", type=_int_at_least(1), default=3, help="heartbeat interval in ticks (3)")
    serve.add_argument("--snapshot-threshold", type=_int_at_least(0), default=20_000,
                       help="entries applied between snapshots (20000; 0 disables)")
    serve.add_argument("--snapshot-bytes", type=_int_at_least(0), default=64 << 20,
                       help="also snapshot once this many bytes of commands were applied since the last "
                            "snapshot (64 MiB; 0 disables): an entry may hold thousands of writes")
    serve.add_argument("--max-request", type=_int_at_least(64), default=1 << 20,
                       help="largest client request in bytes")
    serve.add_argument("--sync", choices=SYNC_MODES, default="inline",
                       help="inline (default): the loop waits for each fsync; pipelined: fsyncs run "
                            "in a worker thread while the loop goes on, each step's actions held "
                            "until its fsync returns, except a leader's AppendEntries, sent at once "
                            "(see docs/runtime.md)")
    serve.add_argument("--max-pending", type=_int_at_least(1), default=1 << 16,
                       help="client requests pending before the node stops reading from clients (65536)")
    serve.add_argument("--request-timeout", type=_positive_float, default=10.0,
                       help="seconds a client request may take to arrive before the connection is cut (10)")
    security_cli.add_server_tls(serve)
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(handler=_serve, parser=serve)

    cluster = commands.add_parser("cluster", help="run a local cluster of `serve` processes")
    cluster.add_argument("--nodes", type=_int_at_least(1), default=3)
    cluster.add_argument("--data-dir", help="where the nodes keep their WALs and logs (default: a temporary dir)")
    cluster.add_argument("--base-port", type=_port, default=7001,
                         help=f"node i listens for peers on BASE+i-1 and clients on that + {CLIENT_PORT_OFFSET} (0: free ports)")
    cluster.add_argument("--host", default="127.0.0.1")
    cluster.add_argument("--cluster-id", default="raftfast")
    cluster.add_argument("--tick-ms", type=_positive_float, default=10.0)
    cluster.add_argument("--tls", metavar="DIR", help="secure the cluster with the certificates in DIR "
                         "(created with `raftfast certs init` when DIR holds no CA yet)")
    security_cli.add_server_tls(cluster, template=True)
    cluster.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    cluster.set_defaults(handler=_cluster, parser=cluster)

    kv = commands.add_parser("kv", help="put, get, delete, append or cas a key")
    kv_common = argparse.ArgumentParser(add_help=False)
    kv_common.add_argument("--timeout", type=_positive_float, default=5.0, help="seconds (5)")
    _add_targets(kv_common, "ask first")
    security_cli.add_client_credentials(kv_common)
    kv_ops = kv.add_subparsers(dest="op", required=True, metavar="OP")
    for op, names, about in (
        ("get", ["key"], "print a key's value (exit 1 if absent)"),
        ("put", ["key", "value"], "set a key"),
        ("delete", ["key"], "remove a key"),
        ("append", ["key", "value"], "append to a key's value"),
    ):
        sub = kv_ops.add_parser(op, parents=[kv_common], help=about)
        for name in names:
            sub.add_argument(name, metavar=name.upper())
        sub.set_defaults(handler=_kv, parser=sub)
    cas = kv_ops.add_parser("cas", parents=[kv_common], help="compare-and-set: KEY OLD NEW, or --absent KEY NEW")
    cas.add_argument("values", nargs="+", metavar="KEY OLD NEW")
    cas.add_argument("--absent", action="store_true", help="expect the key to be absent (then: KEY NEW)")
    cas.set_defaults(handler=_kv, parser=cas)

    status = commands.add_parser("status", help="role, term, indexes and members of every node")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.add_argument("--timeout", type=_positive_float, default=2.0, help="seconds per node (2)")
    _add_targets(status, "ask")
    security_cli.add_client_credentials(status)
    status.set_defaults(handler=_status, parser=status)

    member = commands.add_parser("member", help="change the membership or move leadership (through the leader)")
    member.add_argument("change", choices=["add", "remove", "add-learner", "promote", "transfer"])
    member.add_argument("node_id", type=_int_at_least(1), metavar="ID")
    member.add_argument("--timeout", type=_positive_float, default=10.0, help="seconds (10)")
    _add_targets(member, "ask first")
    security_cli.add_client_credentials(member, admin=True)
    member.set_defaults(handler=_member, parser=member)

    security_cli.add_certs_command(commands)

    wal = commands.add_parser("wal", help="write-ahead log tools")
    wal_commands = wal.add_subparsers(dest="wal_command", required=True, metavar="COMMAND")
    inspect = wal_commands.add_parser("inspect", help="describe a WAL directory")
    inspect.add_argument("dir")
    inspect.add_argument("rest", nargs=argparse.REMAINDER, help="options for the inspector")
    inspect.set_defaults(handler=_wal, parser=inspect)

    bench = commands.add_parser("bench", help="load-test a local cluster (or --target) with pipelined writes")
    bench.add_argument("--nodes", type=_int_at_least(1), default=3)
    bench.add_argument("--clients", type=_int_at_least(1), default=64)
    bench.add_argument("--depth", type=_int_at_least(1), default=128, help="writes in flight per client (128)")
    bench.add_argument("--duration", type=_positive_float, default=10.0, help="seconds measured (10)")
    bench.add_argument("--warmup", type=_positive_float, default=1.0, help="seconds before measuring (1)")
    bench.add_argument("--value-size", type=_int_at_least(0), default=64, help="bytes per value (64)")
    bench.add_argument("--load-processes", type=_int_at_least(1), default=1,
                       help="processes generating the load (1)")
    bench.add_argument("--rate", type=_rate, metavar="N|P%",
                       help="open loop: offer N writes/s spread over the clients, latency measured from each "
                            "write's scheduled send time; P%% first measures the maximum (a short closed-loop "
                            "run), then offers P%% of it. --depth caps the writes in flight per client")
    bench.add_argument("--one-at-a-time", action="store_true",
                       help="one client, one write in flight: the latency measurement")
    bench.add_argument("--data-dir", help="where the local cluster keeps its WALs (default: a temporary dir)")
    bench.add_argument("--sync", choices=SYNC_MODES, default="inline",
                       help="the local cluster's fsync mode (serve --sync): inline (default) for throughput, "
                            "pipelined (the leader's fsync beside replication) for latency at low load")
    bench.add_argument("--tls", metavar="DIR", help="TLS on: the certificates in DIR (created with `raftfast "
                       "certs init` when DIR holds no CA yet); the load uses the client certificate")
    bench.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    bench.add_argument("--plot", metavar="FILE.png",
                       help="also write a PNG of throughput over time and the latency distribution (matplotlib)")
    _add_targets(bench, "load instead of starting a local cluster")
    bench.set_defaults(handler=_bench, parser=bench)

    chaos = commands.add_parser("chaos", help="fault-inject a local cluster under load and check the history")
    chaos.add_argument("--nodes", type=int, choices=[3, 5], default=3)
    chaos.add_argument("--duration", type=_positive_float, default=10.0, help="seconds of load and faults per run (10)")
    chaos.add_argument("--nemesis", type=_nemeses, default="all", metavar="NAME[,NAME...]|all",
                       help="faults to inject (default: all; see docs/chaos.md)")
    chaos.add_argument("--seed", type=_int_at_least(0), default=1, help="seed of the first run (1)")
    chaos.add_argument("--clients", type=_int_at_least(1), default=5, help="concurrent clients (5)")
    chaos.add_argument("--keys", type=_int_at_least(1), default=8, help="keys, half append, half register (8)")
    chaos.add_argument("--history", metavar="FILE", help="write the history here (with --runs: FILE-SEED.EXT)")
    chaos.add_argument("--runs", type=_int_at_least(1), default=1, help="soak: runs with seeds SEED, SEED+1, ...")
    chaos.add_argument("--json", metavar="FILE", help="also write every run's result as JSON")
    chaos.add_argument("--sync", choices=SYNC_MODES, default="inline",
                       help="the nodes' fsync mode (serve --sync): pipelined sends a leader's entries "
                            "while its own fsync runs (inline)")
    chaos.add_argument("-v", "--verbose", action="store_true", help="print what the nemesis does as it does it")
    chaos.set_defaults(handler=_chaos, parser=chaos)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.handler(args, args.parser)


if __name__ == "__main__":
    sys.exit(main())
