"""Strategies: one file each, one registered class; installed as ``cl_fir.strategies``."""
