"""The `execworker` command line: one module per verb, wired up in `main`."""
