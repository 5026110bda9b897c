"""Bytes <-> contract models. Strict on the way in (bad input becomes a `DecodeError` with a
reason), canonical on the way out (the same model always gives the same bytes)."""
