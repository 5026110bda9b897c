"""Pure decisions about a command: time, randomness, ids, rounding, gates.

Nothing here does I/O or reads the wall clock or the global random generator: time and
randomness are passed in, which is what makes a replay byte-identical.
"""
