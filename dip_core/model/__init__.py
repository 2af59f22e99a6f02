"""The skip network as data: its configuration, the canonical parameter layout, initial weights, the fixed
input z and FLOP counts. Framework-neutral (numpy); each backend builds the network from these."""
