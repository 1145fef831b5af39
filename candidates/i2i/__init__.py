"""Per-item neighbour lists (seed 004, "i2i-списки"): lists, builders, model, generator."""
