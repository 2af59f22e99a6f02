"""Benchmarks: the `dip bench` commands, `dip bench all`, the result schema and the chip table (and its page in
Chromium)."""
