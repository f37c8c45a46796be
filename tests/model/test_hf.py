"""Hugging Face checkpoints in and out: parity with `transformers` both ways, exact round trips, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from lmforge.cli import main
from lmforge.config import ConfigError
from lmforge.model.hf import export_hf, import_hf, load_hf
from lmforge.model.heads import TaskModel
from lmforge.model.modeldir import load_model_dir, model_dir_config, save_model_dir
from lmforge.model.transformer import TransformerConfig
from lmforge.tokenize.tokenizer import load_tokenizer
from tests.model.hf_helpers import hf_bert, hf_gpt2, train_wordpiece

BERT_ARCHS = ["BertModel", "BertForMaskedLM", "BertForPreTraining", "BertForSequenceClassification",
              "BertForTokenClassification"]


@pytest.fixture(scope="module")
def tok():
    return train_wordpiece()


def _inputs(vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, vocab, (3, 12), generator=g)
    attn = torch.ones_like(ids)
    attn[1, 7:] = 0
    return ids, attn


def _ours(model: TaskModel, arch: str, ids, attn) -> list[torch.Tensor]:
    hidden = model.backbone(ids, attn)
    if arch == "BertModel":
        return [hidden, torch.tanh(model.pooler(hidden[:, 0]))]
    if arch == "BertForMaskedLM":
        return [model.mlm(hidden)]
    if arch == "BertForPreTraining":
        return [model.mlm(hidden), model.sentence(hidden)]
    if arch == "BertForSequenceClassification":
        return [model.classify(ids, attn)]
    if arch in ("BertForTokenClassification",):
        return [model.tag(ids, attn)]
    return [model.lm(hidden)] if "lm" in model.heads else [hidden]


def _theirs(hf, arch: str, ids, attn) -> list[torch.Tensor]:
    out = hf(input_ids=ids, attention_mask=attn)
    if arch == "BertModel":
        return [out.last_hidden_state, out.pooler_output]
    if arch == "BertForPreTraining":
        return [out.prediction_logits, out.seq_relationship_logits]
    if arch == "GPT2Model":
        return [out.last_hidden_state]
    return [out.logits]


def _close(a: list, b: list, attn: torch.Tensor) -> None:
    """Equal within 1e-5 at real positions (padded positions' outputs are unspecified and never used)."""
    for x, y in zip(a, b, strict=True):
        if x.dim() == 2:  # (B, classes): one row per sequence
            torch.testing.assert_close(x, y, rtol=0, atol=1e-5)
        else:  # (B, T, ...)
            torch.testing.assert_close(x[attn.bool()], y[attn.bool()], rtol=0, atol=1e-5)


@pytest.mark.parametrize("arch", BERT_ARCHS + ["GPT2Model", "GPT2LMHeadModel"])
def test_import_matches_transformers_and_round_trips_exactly(arch, tok, tmp_path):
    from transformers import AutoConfig

    vocab = tok.get_vocab_size()
    src = tmp_path / "hf"
    extra = {"num_labels": 3} if "Classification" in arch else {}
    hf = hf_bert(arch, vocab, src, tok, **extra) if arch.startswith("Bert") else hf_gpt2(arch, vocab, src, tok)
    ids, attn = _inputs(vocab)
    if arch.startswith("GPT2"):
        attn = torch.ones_like(ids)  # left-to-right, unpadded
    loaded = load_hf(src)
    assert loaded.tokenizer is not None and loaded.tokenizer.vocab_size == vocab
    with torch.no_grad():
        _close(_ours(loaded.model, arch, ids, attn), _theirs(hf, arch, ids, attn), attn)

    # HF -> lmforge directory -> HF: the very same tensors, and transformers' own class loads it
    ours_dir = import_hf(src, tmp_path / "lmforge")
    assert json.loads((ours_dir / "config.json").read_text())["source"]["hf_architecture"] == arch
    back = export_hf(ours_dir, tmp_path / "back")
    original, exported = load_file(str(src / "model.safetensors")), load_file(str(back / "model.safetensors"))
    assert sorted(original) == sorted(exported)
    assert all(torch.equal(original[k], exported[k]) for k in original)
    assert AutoConfig.from_pretrained(back).architectures == [arch]
    import transformers

    again = getattr(transformers, arch).from_pretrained(back).eval()
    with torch.no_grad():
        _close(_theirs(again, arch, ids, attn), _theirs(hf, arch, ids, attn), attn)
    assert (back / "tokenizer.json").is_file() and (back / "tokenizer_config.json").is_file()


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_export_of_an_lmforge_model_loads_in_auto_classes(kind, tok, tmp_path):
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    vocab = tok.get_vocab_size()
    decoder = kind == "decoder"
    cfg = TransformerConfig(vocab_size=vocab, max_positions=32, n_layers=2, d_model=32, n_heads=4, d_ff=64,
                            causal=decoder, norm="pre" if decoder else "post",
                            activation="gelu_tanh" if decoder else "gelu", type_vocab_size=0 if decoder else 2,
                            norm_eps=1e-5 if decoder else 1e-12, dropout=0.0, attn_dropout=0.0)
    torch.manual_seed(3)
    model = TaskModel(cfg, heads=("lm",) if decoder else ("mlm",)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    tok.save(str(tmp_path / "tokenizer.json"))
    src = save_model_dir(model, model_dir_config(model), tmp_path / "ours", load_tokenizer(tmp_path / "tokenizer.json"))
    out = export_hf(src, tmp_path / "hf")
    Auto = AutoModelForCausalLM if decoder else AutoModelForMaskedLM
    hf = Auto.from_pretrained(out).eval()
    ids, attn = _inputs(vocab)
    attn = torch.ones_like(ids) if decoder else attn
    with torch.no_grad():
        hidden = model.backbone(ids, attn)
        ours = model.lm(hidden) if decoder else model.mlm(hidden)
        _close([ours], [hf(input_ids=ids, attention_mask=attn).logits], attn)
    hf_tok = AutoTokenizer.from_pretrained(out)
    assert hf_tok("今天 天气")["input_ids"] == tok.encode("今天 天气").ids


def test_pytorch_bin_is_loaded_weights_only_and_pickles_are_refused(tok, tmp_path):
    vocab = tok.get_vocab_size()
    src = tmp_path / "hf"
    hf = hf_bert("BertForMaskedLM", vocab, src, tok)
    (src / "model.safetensors").unlink()
    torch.save(hf.state_dict(), src / "pytorch_model.bin")
    ids, attn = _inputs(vocab)
    with torch.no_grad():
        _close(_ours(load_hf(src).model, "BertForMaskedLM", ids, attn), _theirs(hf, "BertForMaskedLM", ids, attn),
               attn)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, src / "pytorch_model.bin")
    with pytest.raises(ConfigError) as err:
        load_hf(src)
    message = str(err.value)
    assert message.startswith(f"{src / 'pytorch_model.bin'}: refused: ") and "import print" in message
    assert "\n" not in message  # and no advice to switch the safety off:
    assert "weights_only" not in message and "safe_globals" not in message
    (src / "pytorch_model.bin").write_bytes(b"not a pickle at all")
    with pytest.raises(ConfigError, match=r"pytorch_model.bin: not a loadable PyTorch weights file \(") as err:
        load_hf(src)
    assert "weights_only" not in str(err.value)


def test_cli_import_refuses_a_code_pickle_in_one_line(tok, tmp_path, capsys):
    src = tmp_path / "hf"
    hf_bert("BertForMaskedLM", tok.get_vocab_size(), src, tok)
    (src / "model.safetensors").unlink()

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, src / "pytorch_model.bin")
    capsys.readouterr()  # what building the source directory printed
    assert main(["import", "--from", str(src), "--out", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert "pwned" not in captured.out
    assert captured.err.startswith("lmforge: error: ") and captured.err.count("\n") == 1
    assert str(src / "pytorch_model.bin") in captured.err and "weights_only" not in captured.err
    assert not (tmp_path / "out").exists()


def _broken(tok, tmp_path: Path, arch: str = "BertForMaskedLM") -> Path:
    src = tmp_path / "hf"
    hf_bert(arch, tok.get_vocab_size(), src, tok)
    return src


def test_unsupported_architecture_is_one_clear_error(tok, tmp_path):
    src = _broken(tok, tmp_path)
    cfg = json.loads((src / "config.json").read_text())
    cfg.update(architectures=["RobertaForMaskedLM"], model_type="roberta")
    (src / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="unsupported architecture 'RobertaForMaskedLM'"):
        import_hf(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_mismatched_and_unexpected_tensors_name_the_tensor(tok, tmp_path):
    src = _broken(tok, tmp_path)
    good = load_file(str(src / "model.safetensors"))
    cases = {
        "missing tensor bert.encoder.layer.1.output.dense.bias": lambda s: s.pop("bert.encoder.layer.1.output.dense.bias"),
        r"missing tensor bert.encoder.layer.0.attention.self.key.weight":
            lambda s: s.pop("bert.encoder.layer.0.attention.self.key.weight"),
        r"tensor cls.predictions.transform.dense.weight has shape \(32, 16\)":
            lambda s: s.__setitem__("cls.predictions.transform.dense.weight", torch.zeros(32, 16)),
        "unexpected tensor bert.encoder.layer.7.foo.weight": lambda s: s.__setitem__("bert.encoder.layer.7.foo.weight", torch.zeros(2)),
    }
    for message, damage in cases.items():
        state = dict(good)
        damage(state)
        save_file(state, str(src / "model.safetensors"))
        with pytest.raises(ConfigError, match=message) as err:
            import_hf(src, tmp_path / "out")
        assert "model.safetensors" in str(err.value) and "\n" not in str(err.value)
        assert not (tmp_path / "out").exists()


def test_malformed_files_name_the_file(tok, tmp_path):
    src = _broken(tok, tmp_path)
    (src / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(ConfigError, match="model.safetensors: not a readable safetensors file"):
        load_hf(src)
    (src / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="config.json: not valid JSON"):
        load_hf(src)
    (src / "config.json").write_text(json.dumps({"architectures": ["BertForMaskedLM"], "model_type": "bert"}))
    with pytest.raises(ConfigError, match="config.json: missing key 'vocab_size'"):
        load_hf(src)
    with pytest.raises(ConfigError, match="model directory not found"):
        load_model_dir(tmp_path / "nowhere")


def test_export_refuses_what_hf_cannot_express(tok, tmp_path):
    cfg = TransformerConfig(vocab_size=50, max_positions=16, n_layers=1, d_model=16, n_heads=2, d_ff=32,
                            positions="rotary")
    model = TaskModel(cfg, heads=("mlm",))
    src = save_model_dir(model, model_dir_config(model), tmp_path / "ours")
    with pytest.raises(ConfigError, match="model.positions=rotary in an encoder: no native transformers encoder"):
        export_hf(src, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
