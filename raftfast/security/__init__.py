"""Security for raftfast: mutual TLS between nodes, TLS and credentials for clients, roles.

- `layout`: where `raftfast certs init` puts the CA, node, client and admin certificates.
- `certs`: creates them (the `cryptography` package).
- `tls`: SSL contexts for the peer and client ports, and the names a certificate carries.
- `listener`: accepts TCP connections, completes the TLS handshake and logs every refusal.
- `auth`: who a client is (certificate or bearer token) and what its role allows.
- `credentials`: what a client presents (CA, certificate, token), picklable for load processes.
- `cli`: `raftfast certs init`, and the TLS and credential flags of the other commands.

The client port's gate (identity before service, the admin check) is `raftfast.kv.gate`.
"""
