"""Answers whether a Kafka broker at HOST:PORT serves metadata, using only the standard library.

`ops/kafka up` uses it to wait until the broker is really usable (an open port is not enough: a
KRaft broker listens before it has caught up with the metadata log and unfenced itself). It sends
one Metadata v4 request (the oldest version Kafka 4.x still accepts, KIP-896) and exits 0 when the
answer lists at least one broker.
"""

from __future__ import annotations

import socket
import struct
import sys

METADATA_API_KEY = 3
METADATA_VERSION = 4
CLIENT_ID = b"execworker-probe"


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
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.sendall(metadata_request(correlation_id=1))
        (size,) = struct.unpack(">i", read_exact(sock, 4))
        response = read_exact(sock, size)
    _correlation_id, _throttle_ms, brokers = struct.unpack(">iii", response[:12])
    return int(brokers)


def main() -> int:
    host, _, port = sys.argv[1].rpartition(":")
    try:
        return 0 if broker_count(host or "127.0.0.1", int(port), timeout_s=2.0) > 0 else 1
    except (OSError, ValueError, struct.error):
        return 1


if __name__ == "__main__":
    sys.exit(main())
