"""Network namespaces: each node in its own `ip netns`, all joined by one bridge, so partitions
are real packet loss in the kernel (blackhole routes) rather than frames dropped by the node.

    ns rfc<tag>n<id>: eth side 10.213.N.<id>/24 ──veth──> bridge rfc<tag>br (10.213.N.254/24)

Everything stays on this machine: the addresses are private, on virtual links only. Clients in
the root namespace reach every node through the bridge, whatever the partition, as in Jepsen.
Needs root and iproute2 (`ip`); `available()` says why not otherwise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Dict, Iterable, List, Set, Tuple

__all__ = ["Namespaces", "available"]

_PREFIX = "10.213"


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def available() -> Tuple[bool, str]:
    """(True, "") when namespaces can be made here, else (False, the reason)."""
    if os.geteuid() != 0:
        return False, "network namespaces need root"
    if shutil.which("ip") is None:
        return False, "network namespaces need iproute2's `ip`, which is not installed"
    probe = f"rfcprobe{os.getpid() % 100000}"
    try:
        _ip("netns", "add", probe)
        _ip("netns", "del", probe)
    except subprocess.CalledProcessError as exc:
        return False, f"`ip netns add` failed: {exc.stderr.strip()}"
    return True, ""


def _free_subnet() -> int:
    """A third octet N such that 10.213.N.0/24 is not in use on this machine."""
    used = _ip("-o", "-4", "addr", "show").stdout
    start = os.getpid() % 250
    for step in range(250):
        n = (start + step) % 250
        if f" {_PREFIX}.{n}." not in used:
            return n
    raise RuntimeError(f"no free {_PREFIX}.N.0/24 subnet for the chaos namespaces")


class Namespaces:
    """One namespace per node id; `block` installs exactly the given blackholes."""

    def __init__(self, ids: Iterable[int]) -> None:
        self.ids = sorted(ids)
        if self.ids and self.ids[-1] > 250:
            raise ValueError("node ids above 250 do not fit the /24")
        tag = f"{os.getpid() % 0x10000:04x}"
        self.bridge = f"rfc{tag}br"
        self._ns = {i: f"rfc{tag}n{i}" for i in self.ids}
        self._veth = {i: f"rfc{tag}h{i}" for i in self.ids}
        self.subnet = -1
        self._routes: Dict[int, Set[int]] = {i: set() for i in self.ids}

    def address(self, node: int) -> str:
        return f"{_PREFIX}.{self.subnet}.{node}"

    def wrap(self, node: int, command: List[str]) -> List[str]:
        """`command` run inside `node`'s namespace (ip netns exec execs it: same pid)."""
        return ["ip", "netns", "exec", self._ns[node], *command]

    def setup(self) -> None:
        self.subnet = _free_subnet()
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{_PREFIX}.{self.subnet}.254/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for node in self.ids:
                ns, host = self._ns[node], self._veth[node]
                _ip("netns", "add", ns)
                _ip("link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", ns)
                _ip("link", "set", host, "master", self.bridge)
                _ip("link", "set", host, "up")
                _ip("-n", ns, "addr", "add", f"{self.address(node)}/24", "dev", "eth0")
                _ip("-n", ns, "link", "set", "eth0", "up")
                _ip("-n", ns, "link", "set", "lo", "up")
        except subprocess.CalledProcessError as exc:
            self.teardown()
            raise RuntimeError(f"setting up network namespaces failed: {' '.join(exc.cmd)}: "
                               f"{exc.stderr.strip()}") from None

    def block(self, blocked: Dict[int, Set[int]]) -> None:
        """Make node a's packets to every node in blocked[a] vanish (and nothing else)."""
        for node in self.ids:
            want = set(blocked.get(node, ()))
            have = self._routes[node]
            for peer in sorted(want - have):
                _ip("-n", self._ns[node], "route", "add", "blackhole", f"{self.address(peer)}/32")
            for peer in sorted(have - want):
                _ip("-n", self._ns[node], "route", "del", "blackhole", f"{self.address(peer)}/32")
            self._routes[node] = want

    def teardown(self) -> None:
        """Remove every namespace and the bridge (the veths go with their namespaces)."""
        for ns in self._ns.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
