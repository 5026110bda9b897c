"""Seeded randomness, derived per key so that results do not depend on processing order.

A single shared stream would make a result depend on which messages were processed before it,
and so on partitioning and worker count. Deriving each draw from (seed, key) makes the draw for
an order a function of the order alone.
"""

from __future__ import annotations

import hashlib


class Rng:
    def __init__(self, seed: int) -> None:
        self.seed = seed

    def bits64(self, key: str) -> int:
        """One uniform 64-bit draw for `key` (0 <= n < 2^64), without building a generator."""
        digest = hashlib.sha256(f"{self.seed}|{key}".encode()).digest()
        return int.from_bytes(digest[:8], "big")
