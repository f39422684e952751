"""Text side of composed image retrieval: a vocabulary built from the training captions and a
GRU sentence encoder trained from scratch (TIRG's and VAL's choice of a small LSTM/GRU;
pretrained language models need weights, which are never downloaded).

Tokens: lower-cased words and single punctuation marks. Id 0 is padding, id 1 unknown.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Iterable, Sequence

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from cl_fir.runtime.device import host_to_device

_TOKEN = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")
PAD, UNK = 0, 1


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


class Vocabulary:
    def __init__(self, words: Sequence[str]):
        self.words = ["<pad>", "<unk>", *words]
        self.index = {w: i for i, w in enumerate(self.words)}

    @classmethod
    def build(cls, texts: Iterable[str], min_count: int = 1) -> "Vocabulary":
        """Words seen at least ``min_count`` times, most frequent first (ties alphabetical)."""
        counts = Counter(t for text in texts for t in tokenize(text))
        return cls([w for w, c in sorted(counts.items(), key=lambda wc: (-wc[1], wc[0])) if c >= min_count])

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(tokens (B, L) padded with 0, lengths (B,))``; an empty text becomes one unknown token."""
        ids = [[self.index.get(t, UNK) for t in tokenize(text)] or [UNK] for text in texts]
        lengths = torch.tensor([len(i) for i in ids], dtype=torch.long)
        tokens = torch.zeros(len(ids), int(lengths.max()) if len(ids) else 0, dtype=torch.long)
        for row, i in enumerate(ids):
            tokens[row, :len(i)] = torch.tensor(i, dtype=torch.long)
        return tokens, lengths

    def state_dict(self) -> dict:
        return {"words": self.words[2:]}

    @classmethod
    def from_state_dict(cls, state: dict) -> "Vocabulary":
        return cls(state["words"])


class GRUTextEncoder(nn.Module):
    """Word embeddings -> GRU -> last hidden state -> Linear to ``out_dim``."""

    def __init__(self, vocab_size: int, out_dim: int, word_dim: int = 300, hidden_dim: int = 512):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, word_dim, padding_idx=PAD)
        self.gru = nn.GRU(word_dim, hidden_dim, batch_first=True)
        self.project = nn.Linear(hidden_dim, out_dim)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(self.embedding(tokens), lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, hidden = self.gru(packed)
        return self.project(hidden[-1])


class SentenceTransformerTextEncoder(nn.Module):
    """A local sentence-transformers checkpoint (a folder saved by ``SentenceTransformer.save``),
    fine-tuned at ``lr_multiplier`` x the base learning rate (MGUR trains RoBERTa at 0.01x),
    then ``BatchNorm1d`` and a linear projection to ``out_dim`` (MGUR's text head). Nothing is
    downloaded: the folder must exist and the Hugging Face hub is switched to offline mode.
    Needs the ``text`` extra (``pip install 'cl-fir[text]'``)."""

    def __init__(self, checkpoint: str, out_dim: int, lr_multiplier: float = 0.01):
        super().__init__()
        import os
        from pathlib import Path

        from cl_fir.errors import ConfigError

        if not Path(checkpoint).is_dir():
            raise ConfigError(f"model.text_checkpoint: {checkpoint} is not a folder; give a sentence-transformers "
                              f"model saved on this machine (cl-fir never downloads weights)")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise ConfigError("model.text_encoder = 'sentence-transformer' needs the sentence-transformers package: "
                              "pip install 'cl-fir[text]'") from None
        self.model = SentenceTransformer(str(checkpoint), device="cpu", local_files_only=True)
        for p in self.model.parameters():
            p.lr_multiplier = lr_multiplier
        dim = self.model.get_embedding_dimension()
        self.norm = nn.BatchNorm1d(dim)
        self.project = nn.Linear(dim, out_dim)

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        device = self.project.weight.device
        features = {k: host_to_device(v, device) if isinstance(v, torch.Tensor) else v
                    for k, v in self.model.tokenize(list(texts)).items()}
        return self.project(self.norm(self.model(features)["sentence_embedding"].float()))
