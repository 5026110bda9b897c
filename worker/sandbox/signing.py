"""Binance's SIGNED-request rules, server side (rest-api.md, "SIGNED Endpoint security").

* Parameters come from the query string, the `application/x-www-form-urlencoded` body, or both;
  a parameter sent in both is taken from the query string.
* `signature` (hex HMAC-SHA256 with the API secret, case-insensitive) may be sent in either part.
  The signed payload is the query string concatenated *without separator* to the body, each as
  sent on the wire (percent-encoded) and without the `signature` parameter itself.
The timing rule (`timestamp`, `recvWindow`) is checked when the request is processed, on the
venue's clock: `SandboxExchange._check_timestamp`.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import parse_qsl

from worker.io.binance.protocol import ErrorCode
from worker.sandbox.errors import ApiError


def merged_params(raw_query: str, body: str) -> dict[str, str]:
    """All parameters; the query string wins over the body (Binance's rule)."""
    params = dict(parse_qsl(body, keep_blank_values=True))
    params.update(parse_qsl(raw_query, keep_blank_values=True))
    return params


def _without_signature(part: str) -> tuple[str, str | None]:
    """`part` with its `signature=` parameter removed (bytes otherwise untouched), and that value."""
    kept: list[str] = []
    signature: str | None = None
    for item in part.split("&") if part else []:
        if item.startswith("signature="):
            signature = item.removeprefix("signature=")
        else:
            kept.append(item)
    return "&".join(kept), signature


def signature_payload(raw_query: str, body: str) -> tuple[str, str | None]:
    """The bytes Binance signs (query + body, no separator) and the signature sent (query first)."""
    query, in_query = _without_signature(raw_query)
    rest, in_body = _without_signature(body)
    return query + rest, in_query if in_query is not None else in_body


def hmac_hex(payload: str, secret: str) -> str:
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def check_signature(raw_query: str, body: str, secret: str) -> None:
    payload, signature = signature_payload(raw_query, body)
    if not signature:
        raise ApiError(
            400,
            ErrorCode.MANDATORY_PARAM,
            "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.",
        )
    if not hmac.compare_digest(hmac_hex(payload, secret), signature.lower()):
        raise ApiError(400, ErrorCode.INVALID_SIGNATURE, "Signature for this request is not valid.")
