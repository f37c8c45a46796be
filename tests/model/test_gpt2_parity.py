"""Parity with transformers' GPT-2: pre-LN causal decoder, tanh-GELU, tied LM head.
GPT-2 stores Conv1D weights as (in, out): the map is a transpose, nothing else."""

import torch

from lmforge.model.heads import LanguageModel
from lmforge.model.hf import gpt2_to_lmforge
from lmforge.model.transformer import TransformerConfig


def test_matches_gpt2_lm_head_model(corpus):
    from transformers import GPT2Config, GPT2LMHeadModel

    vocab = len(corpus.vocab)
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_positions=16, n_embd=32, n_layer=2, n_head=4,
                                    n_inner=64)).eval()
    ours = LanguageModel(TransformerConfig(vocab_size=vocab, max_positions=16, n_layers=2, d_model=32, n_heads=4,
                                           d_ff=64, causal=True, norm="pre", activation="gelu_tanh",
                                           type_vocab_size=0, norm_eps=1e-5), heads=("lm",)).eval()
    converted, _ = gpt2_to_lmforge(hf.state_dict(), 2)
    missing, unexpected = ours.load_state_dict(converted, strict=False)
    assert not missing and not unexpected  # the map (shared with lmforge.model.hf) covers every tensor
    ids = corpus.tokens[:32].view(2, 16)
    with torch.no_grad():
        torch.testing.assert_close(ours(ids)["lm_logits"], hf(input_ids=ids).logits, rtol=1e-4, atol=1e-4)
