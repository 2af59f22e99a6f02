"""The repository itself: the README and docs site, and dip_core's import layering."""
