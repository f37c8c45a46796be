"""Parity with transformers' BERT: copy its random weights by a plain name map, compare logits.

This pins the post-LN block math, the padding mask, the masked-only MLM head and the claim that
BERT checkpoints map onto our parameter names (fused q/k/v is the one concatenation).
"""

import torch

from lmforge.model.heads import LanguageModel
from lmforge.model.hf import bert_to_lmforge
from lmforge.model.transformer import TransformerConfig


def test_matches_bert_for_masked_lm(corpus):
    from transformers import BertConfig, BertForMaskedLM

    vocab = len(corpus.vocab)
    torch.manual_seed(0)
    hf = BertForMaskedLM(BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                    intermediate_size=64, max_position_embeddings=16)).eval()
    ours = LanguageModel(TransformerConfig(vocab_size=vocab, max_positions=16, n_layers=2, d_model=32, n_heads=4,
                                           d_ff=64), heads=("mlm",)).eval()
    state = hf.state_dict()
    if "cls.predictions.bias" not in state:
        state["cls.predictions.bias"] = state["cls.predictions.decoder.bias"]
    converted, _ = bert_to_lmforge(state, 2)
    missing, unexpected = ours.load_state_dict(converted, strict=False)
    assert not missing and not unexpected  # the map (shared with lmforge.model.hf) covers every tensor
    ids = corpus.tokens[:48].view(3, 16)
    attn = torch.ones_like(ids)
    attn[1, 11:] = 0
    types = torch.zeros_like(ids)
    types[:, 8:] = 1
    positions = (ids % 5 == 0) & attn.bool()
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=attn, token_type_ids=types).logits[positions]
        got = ours(ids, attn, types, masked_positions=positions)["mlm_logits"]
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
