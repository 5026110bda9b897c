"""Contract v1: the messages the worker reads and writes, and the executor protocol.

The bottom layer: it imports nothing else of ours. `schemas/` and `docs/api_contracts.md` are
generated from these models.
"""
