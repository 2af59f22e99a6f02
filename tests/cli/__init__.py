"""The `dip` command: help and errors, every task through `dip run`, its checks and faults, bad input, `dip batch`
(local and Ray)."""
