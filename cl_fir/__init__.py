"""cl-fir: a continual-learning benchmark harness for fine-grained fashion image retrieval."""

__version__ = "0.1.0"
