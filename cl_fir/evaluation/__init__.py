"""Retrieval metrics, matrix-derived continual-learning metrics, and the evaluator."""

from cl_fir.evaluation.retrieval import average_precision, recall_at_k, retrieval_scores

__all__ = ["average_precision", "recall_at_k", "retrieval_scores"]
