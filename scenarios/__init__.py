"""Shipped scenario files (one TOML each); installed as ``cl_fir.scenarios``."""
