"""The sentence-transformers files of a Hugging Face export, so that `SentenceTransformer(DIR)` computes
what lmforge does: the encoder (the directory's transformers model), mean pooling over the real tokens
(what `Predictor.embed` returns), and for a mean-pooled classifier its head as Dense layers (BERT's tanh
pooler if it has one, then the classifier with no activation), so `encode` returns its logits.

    DIR/modules.json                 the pipeline: Transformer, Pooling[, Dense...]
    DIR/sentence_bert_config.json    max_seq_length (lmforge's max_length), do_lower_case false
    DIR/1_Pooling/config.json        mean pooling over word_embedding_dimension
    DIR/2_Dense/, DIR/3_Dense/       config.json (in/out features, bias, activation) + model.safetensors
                                     (linear.weight (out, in), linear.bias (out,))

The same layout as the sentence-transformers packages ship (e.g. all-MiniLM-L6-v2's).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from safetensors.torch import load_file, save_file
from torch import Tensor

from lmforge.config import ConfigError

ACTIVATIONS = {"tanh": "torch.nn.modules.activation.Tanh", "identity": "torch.nn.modules.linear.Identity"}
Dense = tuple[Tensor, Tensor, str]  # weight (out, in), bias (out,), "tanh" | "identity"


def write_sentence_files(out: Path, width: int, max_length: int, dense: list[Dense]) -> None:
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    (out / "1_Pooling").mkdir()
    _write_json(out / "1_Pooling" / "config.json", {
        "word_embedding_dimension": width, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False})
    for k, (weight, bias, activation) in enumerate(dense, start=2):
        path = out / f"{k}_Dense"
        path.mkdir()
        _write_json(path / "config.json", {"in_features": weight.shape[1], "out_features": weight.shape[0],
                                           "bias": True, "activation_function": ACTIVATIONS[activation]})
        save_file({"linear.weight": weight.contiguous(), "linear.bias": bias.contiguous()}, str(path / "model.safetensors"))
        modules.append({"idx": k, "name": str(k), "path": path.name, "type": "sentence_transformers.models.Dense"})
    _write_json(out / "modules.json", modules)
    _write_json(out / "sentence_bert_config.json", {"max_seq_length": max_length, "do_lower_case": False})


def read_dense_head(root: Path) -> Optional[list[Dense]]:
    """The Dense layers after mean pooling that ``write_sentence_files`` wrote, or None when the
    directory has no sentence-transformers pipeline of that shape."""
    if not (root / "modules.json").is_file():
        return None
    modules = json.loads((root / "modules.json").read_text(encoding="utf-8"))
    kinds = [m.get("type", "").rsplit(".", 1)[-1] for m in modules]
    if kinds[:2] != ["Transformer", "Pooling"] or any(k != "Dense" for k in kinds[2:]) or len(kinds) < 3:
        return None
    pooling = json.loads((root / modules[1]["path"] / "config.json").read_text(encoding="utf-8"))
    if not pooling.get("pooling_mode_mean_tokens"):
        raise ConfigError(f"{root / modules[1]['path']}: lmforge's classifier head reads mean pooling only")
    names = {v: k for k, v in ACTIVATIONS.items()}
    dense = []
    for module in modules[2:]:
        path = root / module["path"]
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        activation = names.get(config.get("activation_function", ACTIVATIONS["tanh"]))
        if activation is None:
            raise ConfigError(f"{path / 'config.json'}: activation {config['activation_function']!r}; lmforge's "
                              f"head uses {', '.join(ACTIVATIONS.values())}")
        tensors = load_file(str(path / "model.safetensors"))
        dense.append((tensors["linear.weight"], tensors["linear.bias"], activation))
    return dense


def _write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
