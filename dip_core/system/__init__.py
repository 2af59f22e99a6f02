"""The machine and the file system: atomic writes, per-user folders, the version, CPU threads, heap settings,
float32 precision on a device. Imports nothing else of dip_core but its errors."""
