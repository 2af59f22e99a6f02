"""The machine: the heap allocator, CPU threads, and the Apple-silicon paths simulated on Linux."""
