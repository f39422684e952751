"""Backbones, attribute-conditioned embedding heads, and the retrieval model."""

from cl_fir.models.retrieval_model import RetrievalModel, build_model

__all__ = ["RetrievalModel", "build_model"]
