"""Answers whether a Kafka broker at HOST:PORT serves metadata, using only the standard library.

`ops/kafka up` uses it to wait until the broker is really usable (an open port is not enough: a
KRaft broker listens before it has caught up with the metadata log and unfenced itself). It sends
one Metadata v4 request (the oldest version Kafka 4.x still accepts, KIP-896) and exits 0 when the
answer lists at least MIN_BROKERS brokers (second argument, default 1).

A secured listener (`EXECWORKER_KAFKA_SECURITY=sasl_ssl`): with EXECWORKER_PROBE_CAFILE set the
connection is TLS (verified against that CA), and with EXECWORKER_PROBE_USER and
EXECWORKER_PROBE_PASSWORD_FILE set it authenticates with SASL/PLAIN (SaslHandshake v1 +
SaslAuthenticate v0) before asking for metadata.
"""

from __future__ import annotations

import os
import socket
import ssl
import struct
import sys

METADATA_API_KEY = 3
METADATA_VERSION = 4
CLIENT_ID = b"execworker-probe"


SASL_HANDSHAKE_API_KEY = 17
SASL_AUTHENTICATE_API_KEY = 36


def request(api_key: int, version: int, correlation_id: int, body: bytes) -> bytes:
    header = struct.pack(">hhih", api_key, version, correlation_id, len(CLIENT_ID)) + CLIENT_ID
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def exchange(sock: socket.socket, message: bytes) -> bytes:
    sock.sendall(message)
    (size,) = struct.unpack(">i", read_exact(sock, 4))
    return read_exact(sock, size)


def sasl_plain(sock: socket.socket, user: str, password: str) -> None:
    mechanism = b"PLAIN"
    answer = exchange(sock, request(SASL_HANDSHAKE_API_KEY, 1, 1, struct.pack(">h", len(mechanism)) + mechanism))
    (error,) = struct.unpack(">h", answer[4:6])
    if error:
        raise ConnectionError(f"SASL handshake refused (error {error})")
    token = b"\0" + user.encode() + b"\0" + password.encode()
    answer = exchange(sock, request(SASL_AUTHENTICATE_API_KEY, 0, 2, struct.pack(">i", len(token)) + token))
    (error,) = struct.unpack(">h", answer[4:6])
    if error:
        raise ConnectionError(f"SASL authentication failed (error {error})")


def metadata_request(correlation_id: int) -> bytes:
    header = struct.pack(">hhih", METADATA_API_KEY, METADATA_VERSION, correlation_id, len(CLIENT_ID))
    body = struct.pack(">ib", -1, 0)  # topics = null (all), allow_auto_topic_creation = false
    payload = header + CLIENT_ID + body
    return struct.pack(">i", len(payload)) + payload


def read_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        chunks.extend(chunk)
    return bytes(chunks)


def broker_count(host: str, port: int, timeout_s: float) -> int:
    with socket.create_connection((host, port), timeout=timeout_s) as raw:
        sock = raw
        cafile = os.environ.get("EXECWORKER_PROBE_CAFILE")
        if cafile:
            sock = ssl.create_default_context(cafile=cafile).wrap_socket(raw, server_hostname=host)
        user, password_file = os.environ.get("EXECWORKER_PROBE_USER"), os.environ.get("EXECWORKER_PROBE_PASSWORD_FILE")
        if user and password_file:
            with open(password_file, encoding="utf-8") as f:
                sasl_plain(sock, user, f.read().strip())
        sock.sendall(metadata_request(correlation_id=3))
        (size,) = struct.unpack(">i", read_exact(sock, 4))
        response = read_exact(sock, size)
    _correlation_id, _throttle_ms, brokers = struct.unpack(">iii", response[:12])
    return int(brokers)


def main() -> int:
    host, _, port = sys.argv[1].rpartition(":")
    minimum = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    try:
        return 0 if broker_count(host or "127.0.0.1", int(port), timeout_s=2.0) >= minimum else 1
    except (OSError, ValueError, struct.error):
        return 1


if __name__ == "__main__":
    sys.exit(main())
