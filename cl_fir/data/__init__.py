"""Dataset readers, the synthetic generator, lazy image datasets, transforms and samplers."""
