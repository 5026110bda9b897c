"""The sandbox's error answer: an HTTP status with Binance's `{"code", "msg"}` body."""

from __future__ import annotations


class ApiError(Exception):
    def __init__(self, status: int, code: int, msg: str, retry_after_s: int | None = None) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg, self.retry_after_s = status, code, msg, retry_after_s
