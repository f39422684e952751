"""Backbones, attribute-conditioned embedding heads, and the retrieval model."""

from cl_fir.models.factory import build_model
from cl_fir.models.retrieval_model import RetrievalModel

__all__ = ["RetrievalModel", "build_model"]
