"""A PostgreSQL startup by hand, from a chosen source address: what a client elsewhere meets
(pg_hba.conf decides by the client's address and whether it uses TLS)."""

import base64
import secrets
import socket
import ssl
import struct

SSL_REQUEST = 80877103
PROTOCOL_3 = 196608


def startup(port: int, source: str, *, tls: bool, host: str = "127.0.0.1") -> tuple[bytes, str]:
    """The server's first answer to a startup as `postgres` from `source`: (b"R", ...) when it
    asks for the password, (b"E", message) when it refuses the connection."""
    sock = socket.create_connection((host, port), timeout=10, source_address=(source, 0))
    try:
        if tls:
            sock.sendall(struct.pack("!ii", 8, SSL_REQUEST))
            assert sock.recv(1) == b"S"
            context = ssl.create_default_context()
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            sock = context.wrap_socket(sock)
        params = b"user\0postgres\0database\0postgres\0\0"
        sock.sendall(struct.pack("!ii", 8 + len(params), PROTOCOL_3) + params)
        kind = sock.recv(1)
        (length,) = struct.unpack("!i", _exactly(sock, 4))
        return kind, _exactly(sock, length - 4).decode(errors="replace")
    finally:
        sock.close()


def wrong_password(port: int, source: str, *, host: str = "127.0.0.1") -> str:
    """A SCRAM login as `postgres` from `source` with a wrong proof; the server's refusal."""
    sock = socket.create_connection((host, port), timeout=10, source_address=(source, 0))
    try:
        params = b"user\0postgres\0database\0postgres\0\0"
        sock.sendall(struct.pack("!ii", 8 + len(params), PROTOCOL_3) + params)
        kind, body = _message(sock)
        if kind != b"R":
            return body.decode(errors="replace")
        nonce = base64.b64encode(secrets.token_bytes(18)).decode()
        first = f"n,,n=,r={nonce}".encode()
        payload = b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first
        sock.sendall(b"p" + struct.pack("!i", 4 + len(payload)) + payload)
        kind, body = _message(sock)
        server_first = body[4:].decode()
        full_nonce = dict(part.split("=", 1) for part in server_first.split(","))["r"]
        proof = base64.b64encode(secrets.token_bytes(32)).decode()
        final = f"c=biws,r={full_nonce},p={proof}".encode()
        sock.sendall(b"p" + struct.pack("!i", 4 + len(final)) + final)
        return _message(sock)[1].decode(errors="replace")
    finally:
        sock.close()


def _message(sock) -> tuple[bytes, bytes]:
    kind = sock.recv(1)
    (length,) = struct.unpack("!i", _exactly(sock, 4))
    return kind, _exactly(sock, length - 4)


def _exactly(sock, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data
