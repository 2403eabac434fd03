"""The command-line face of raftfast.security: `raftfast certs init`, and the TLS and credential
flags that `serve`, `cluster`, `bench`, `kv`, `status` and `member` share.

    raftfast certs init DIR --nodes 3 [--host NAME_OR_IP ...] [--days 365] [--force]

`--tls DIR` on `cluster` and `bench` creates DIR with `certs init` when it holds no CA yet, so a
secure local cluster is one command.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from typing import List, Optional

from .auth import ADMIN_ROLE, CLIENT_ROLE
from .credentials import ClientCredentials
from .layout import CertDir
from .tls import TLSConfig

__all__ = [
    "add_certs_command",
    "add_client_credentials",
    "add_server_tls",
    "certs_main",
    "client_credentials",
    "ensure_cert_dir",
    "is_loopback",
    "local_cluster_tls",
    "server_tls",
    "token_args",
]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere


# -- serve ---------------------------------------------------------------------------------------


def add_server_tls(parser: argparse.ArgumentParser, *, template: bool = False) -> None:
    """--tls-cert/--tls-key/--tls-ca and the token files; `template`: paths may hold `{id}`."""
    per_node = " (`{id}` is replaced by each node's id)" if template else ""
    parser.add_argument("--tls-cert", metavar="PEM", help="this node's certificate: mutual TLS on the peer port, "
                        "TLS on the client port; its SAN must name node-ID" + per_node)
    parser.add_argument("--tls-key", metavar="PEM", help="the certificate's private key" + per_node)
    parser.add_argument("--tls-ca", metavar="PEM", help="the cluster CA: peers and client certificates must chain to it")
    parser.add_argument("--token-file", metavar="FILE", help="a bearer token clients may AUTH with (client role; needs TLS)")
    parser.add_argument("--admin-token-file", metavar="FILE", help="a bearer token with the admin role (needs TLS)")
    parser.add_argument("--insecure", action="store_true",
                        help="allow listening without TLS on an address that is not loopback")


def server_tls(args: argparse.Namespace, parser: argparse.ArgumentParser, hosts: List[str]) -> Optional[TLSConfig]:
    """The TLS files named by the flags (None without them); exits with a usage error when
    only some are given, or when a node would listen in the clear beyond loopback."""
    given = [args.tls_cert, args.tls_key, args.tls_ca]
    if any(given) and not all(given):
        parser.error("--tls-cert, --tls-key and --tls-ca go together")
    if not all(given):
        if args.token_file or args.admin_token_file:
            parser.error("--token-file and --admin-token-file need TLS (--tls-cert, --tls-key, --tls-ca)")
        exposed = [h for h in hosts if not is_loopback(h)]
        if exposed and not args.insecure:
            parser.error(f"{exposed[0]} is not a loopback address: anyone who reaches it could join the cluster's "
                         "traffic. Give --tls-cert/--tls-key/--tls-ca (see `raftfast certs init`), or --insecure")
        return None
    return TLSConfig(args.tls_cert, args.tls_key, args.tls_ca)


def local_cluster_tls(args: argparse.Namespace, parser: argparse.ArgumentParser, nodes: int) -> Optional[TLSConfig]:
    """`cluster --tls DIR` (created when new), or the template flags, or None. With DIR, the
    token files it holds are passed to every node (`args.token_file`, `args.admin_token_file`)."""
    if args.tls:
        if any((args.tls_cert, args.tls_key, args.tls_ca)):
            parser.error("--tls DIR names every file already: leave out --tls-cert/--tls-key/--tls-ca")
        layout = ensure_cert_dir(args.tls, nodes, parser)
        for attribute, role in (("token_file", CLIENT_ROLE), ("admin_token_file", ADMIN_ROLE)):
            if getattr(args, attribute) is None and os.path.exists(layout.token(role)):
                setattr(args, attribute, layout.token(role))
        return layout.tls_config()
    return server_tls(args, parser, [args.host])


def ensure_cert_dir(path: str, nodes: int, parser: argparse.ArgumentParser) -> CertDir:
    layout = CertDir(path)
    if not layout.exists():
        from .certs import init_cert_dir

        init_cert_dir(path, nodes)
        print(f"created a CA and certificates for nodes 1..{nodes}, a client and an admin in {path}", file=sys.stderr)
    try:
        layout.check_nodes(nodes)
    except ValueError as exc:
        parser.error(str(exc))
    return layout


def token_args(args: argparse.Namespace) -> List[str]:
    """The token flags to hand on to `raftfast serve`."""
    out: List[str] = []
    if args.token_file:
        out += ["--token-file", args.token_file]
    if args.admin_token_file:
        out += ["--admin-token-file", args.admin_token_file]
    return out


# -- clients -------------------------------------------------------------------------------------


def add_client_credentials(parser: argparse.ArgumentParser, *, admin: bool = False) -> None:
    who = "admin" if admin else "client"
    parser.add_argument("--tls", metavar="DIR",
                        help=f"a cluster with TLS: the CA and the {who} certificate from `raftfast certs init DIR`")
    parser.add_argument("--tls-ca", metavar="PEM", help="the cluster CA (TLS on; instead of --tls)")
    parser.add_argument("--tls-cert", metavar="PEM", help="a client certificate (with --tls-ca)")
    parser.add_argument("--tls-key", metavar="PEM", help="its private key")
    parser.add_argument("--token-file", metavar="FILE", help="a bearer token to AUTH with (with --tls or --tls-ca)")


def client_credentials(args: argparse.Namespace, parser: argparse.ArgumentParser, *,
                       admin: bool = False) -> Optional[ClientCredentials]:
    if args.tls:
        if args.tls_ca:
            parser.error("--tls DIR names the CA already: leave out --tls-ca")
        try:
            credentials = ClientCredentials.from_cert_dir(args.tls, admin=admin)
        except ValueError as exc:
            parser.error(str(exc))
        if args.token_file:  # a token instead of the directory's certificate
            return ClientCredentials(credentials.ca, token_file=args.token_file)
        return credentials
    if args.tls_ca:
        if bool(args.tls_cert) != bool(args.tls_key):
            parser.error("--tls-cert and --tls-key go together")
        return ClientCredentials(args.tls_ca, args.tls_cert, args.tls_key, args.token_file)
    if args.tls_cert or args.token_file:
        parser.error("--tls-cert and --token-file need the cluster CA: --tls DIR or --tls-ca PEM")
    return None


# -- certs ---------------------------------------------------------------------------------------


def add_certs_command(commands: argparse._SubParsersAction) -> None:
    certs = commands.add_parser("certs", help="create the certificates of a secure cluster")
    actions = certs.add_subparsers(dest="certs_command", required=True, metavar="COMMAND")
    init = actions.add_parser("init", help="a CA, node certificates, a client and an admin certificate, two tokens")
    init.add_argument("dir", metavar="DIR")
    init.add_argument("--nodes", type=int, default=3, help="certificates for nodes 1..N (3)")
    init.add_argument("--host", action="append", default=[], metavar="NAME_OR_IP",
                      help="another name or address every node certificate is valid for (repeatable)")
    init.add_argument("--days", type=float, default=365, help="validity of the certificates (365; the CA: 10 years)")
    init.add_argument("--force", action="store_true", help="replace an existing CA and every certificate")
    init.set_defaults(handler=certs_main, parser=init)


def certs_main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .certs import init_cert_dir

    if args.nodes < 1 or args.days <= 0:
        parser.error("--nodes and --days must be positive")
    try:
        layout = init_cert_dir(args.dir, args.nodes, hosts=args.host, days=args.days, force=args.force)
    except (FileExistsError, ValueError, OSError) as exc:
        print(f"raftfast certs init: {exc}", file=sys.stderr)
        return 1
    print(f"CA, certificates for nodes 1..{args.nodes}, a client and an admin, and two tokens in {layout.path}")
    print(f"try: raftfast cluster --tls {layout.path}   then: raftfast kv put k v --tls {layout.path} "
          f"--target 127.0.0.1:8001")
    return 0
