"""Vocabulary, GRU text encoder and TIRG compositor."""

from __future__ import annotations

import torch

from cl_fir.models.compositor import TIRGCompositor
from cl_fir.models.text_encoder import UNK, GRUTextEncoder, Vocabulary, tokenize


def test_vocabulary_orders_by_frequency_and_encodes_with_padding():
    vocab = Vocabulary.build(["Make it red.", "make it blue", "same but with long sleeves"], min_count=1)
    assert vocab.words[:4] == ["<pad>", "<unk>", "it", "make"]
    assert tokenize("Is shorter, and RED!") == ["is", "shorter", ",", "and", "red", "!"]
    tokens, lengths = vocab.encode(["make it red", "purple", ""])
    assert lengths.tolist() == [3, 1, 1] and tokens.shape == (3, 3)
    assert tokens[1].tolist() == [UNK, 0, 0] and tokens[2, 0] == UNK
    again = Vocabulary.from_state_dict(vocab.state_dict())
    assert again.words == vocab.words
    assert Vocabulary.build(["a a b"], min_count=2).words == ["<pad>", "<unk>", "a"]


def test_gru_encoder_ignores_padding():
    torch.manual_seed(0)
    vocab = Vocabulary.build(["make it red", "with long sleeves please"])
    enc = GRUTextEncoder(len(vocab), out_dim=5, word_dim=4, hidden_dim=6).eval()
    alone = enc(*vocab.encode(["make it red"]))
    batched = enc(*vocab.encode(["make it red", "with long sleeves please"]))
    torch.testing.assert_close(batched[0], alone[0], rtol=1e-5, atol=1e-6)
    assert batched.shape == (2, 5)


def test_tirg_is_gate_times_image_plus_residual():
    torch.manual_seed(1)
    comp = TIRGCompositor(4, 3).eval()
    x, t = torch.randn(2, 4), torch.randn(2, 3)
    z = torch.cat([x, t], 1)
    gate = torch.sigmoid(comp.gate(z))
    expected = comp.weights[0] * gate * x + comp.weights[1] * comp.residual(z)
    torch.testing.assert_close(comp(x, t), expected)
    assert comp.weights.tolist() == [1.0, 10.0]


def _tiny_sentence_transformer(folder):
    """A tiny BERT sentence-transformer saved locally (random weights, our own vocabulary)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    hf = folder / "hf"
    hf.mkdir(parents=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "make", "it", "red", "blue", "with", "long", "sleeves"]
    (hf / "vocab.txt").write_text("\n".join(words) + "\n")
    BertTokenizerFast(vocab_file=str(hf / "vocab.txt")).save_pretrained(hf)
    config = BertConfig(vocab_size=len(words), hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=16, max_position_embeddings=32)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(hf)
    word = models.Transformer(str(hf), max_seq_length=16)
    SentenceTransformer(modules=[word, models.Pooling(8)]).save(str(folder / "st"))
    return folder / "st"


def test_local_sentence_transformer_text_encoder(tmp_path):
    import pytest

    pytest.importorskip("sentence_transformers")
    from cl_fir.errors import ConfigError
    from cl_fir.models.text_encoder import SentenceTransformerTextEncoder
    from cl_fir.strategy import parameter_groups

    enc = SentenceTransformerTextEncoder(str(_tiny_sentence_transformer(tmp_path)), out_dim=5, lr_multiplier=0.01)
    out = enc(["make it red", "with long sleeves"])
    assert out.shape == (2, 5)
    out.sum().backward()
    groups = {g["lr"]: len(g["params"]) for g in parameter_groups(enc.parameters(), lr=1.0)}
    assert set(groups) == {1.0, 0.01} and groups[1.0] == 4       # BatchNorm and projection at the base rate
    with pytest.raises(ConfigError, match="is not a folder"):
        SentenceTransformerTextEncoder(str(tmp_path / "missing"), out_dim=5)
