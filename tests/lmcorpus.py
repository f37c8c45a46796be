"""Real tokens for model and training tests: People's Daily, encoded with a small WordPiece trained here."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
import torch

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@dataclass
class TinyCorpus:
    tokens: torch.Tensor  # (N,) ids of the concatenated sentences, [SEP] between them
    vocab: list[str]  # id -> token string
    pad: int
    cls: int
    sep: int
    mask: int
    tokenizer_json: str | None = None  # the trained tokenizer (not saved by save(): ids are what matter)

    def save(self, path) -> None:
        """Tokenizer training has ties broken differently per process: hand subprocesses these exact ids."""
        import json

        from safetensors.torch import save_file

        save_file({"tokens": self.tokens}, f"{path}.safetensors")
        meta = {"vocab": self.vocab, "pad": self.pad, "cls": self.cls, "sep": self.sep, "mask": self.mask}
        with open(f"{path}.json", "w", encoding="utf-8") as f:
            json.dump(meta, f)

    @classmethod
    def load(cls, path) -> "TinyCorpus":
        import json

        from safetensors.torch import load_file

        with open(f"{path}.json", encoding="utf-8") as f:
            meta = json.load(f)
        return cls(load_file(f"{path}.safetensors")["tokens"], **meta)

    @property
    def special_ids(self) -> list[int]:
        return [self.pad, 1, self.cls, self.sep, self.mask]


def build_corpus(n_sentences: int = 3000, vocab_size: int = 800) -> tuple[TinyCorpus, object]:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    from lmforge.corpora import get_corpus

    texts = [r.text for r in itertools.islice(get_corpus("peoples-daily").records(), n_sentences) if r.text]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(
        texts,
        trainers.WordPieceTrainer(
            vocab_size=vocab_size, special_tokens=SPECIALS, limit_alphabet=700, show_progress=False
        ),
    )
    from lmforge.tokenize.tokenizer import canonical_wordpiece_ids

    tok = canonical_wordpiece_ids(tok)  # reproducible ids
    sep = tok.token_to_id("[SEP]")
    ids: list[int] = []
    for enc in tok.encode_batch(texts):
        ids.extend(enc.ids + [sep])
    vocab = [tok.id_to_token(i) for i in range(tok.get_vocab_size())]
    corpus = TinyCorpus(
        torch.tensor(ids),
        vocab,
        tok.token_to_id("[PAD]"),
        tok.token_to_id("[CLS]"),
        sep,
        tok.token_to_id("[MASK]"),
        tok.to_str(),
    )
    return corpus, tok


@pytest.fixture(scope="session")
def corpus() -> TinyCorpus:
    return build_corpus()[0]
