"""`lmforge tokenizer train`: train a WordPiece, byte-level BPE or Unigram tokenizer with the Rust
`tokenizers` library (or adopt an existing tokenizer.json / BERT vocab.txt), save it with its
metadata, and measure how well its vocabulary covers the validation split.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from lmforge.config import ConfigError, build_config, write_config
from lmforge.data.prepared import find_split, iter_texts, split_file
from lmforge.data.text import units
from lmforge.progress import print_summary
from lmforge.tokenize.config import TokenizerTrainConfig

FORMAT_VERSION = 1
EOS_TOKEN = "<|endoftext|>"  # GPT-2's end-of-text token
# Each kind's own special tokens, in id order (they take ids 0..n-1).
BERT_SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
KIND_SPECIAL_TOKENS: dict[str, list[str]] = {
    "wordpiece": BERT_SPECIAL_TOKENS,
    "bpe": [EOS_TOKEN, "<|pad|>"],  # GPT-2 has no padding token; a distinct one keeps padding visible
    "bpe-bert": BERT_SPECIAL_TOKENS,  # an encoder's
    "unigram": ["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"],  # ALBERT
}
# Which token plays which role, by the names common tokenizers use.
ROLE_NAMES: dict[str, tuple[str, ...]] = {
    "pad": ("[PAD]", "<pad>", "<|pad|>"),
    "unk": ("[UNK]", "<unk>"),
    "cls": ("[CLS]", "<s>"),
    "sep": ("[SEP]", "</s>"),
    "mask": ("[MASK]", "<mask>"),
    "eos": (EOS_TOKEN, "</s>"),
}
_HF_ROLE_KEYS = {"pad": "pad_token", "unk": "unk_token", "cls": "cls_token", "sep": "sep_token", "mask": "mask_token", "eos": "eos_token"}
_MODEL_KINDS = {"WordPiece": "wordpiece", "BPE": "bpe", "Unigram": "unigram"}


@dataclass
class LoadedTokenizer:
    """A tokenizer with what later stages need to know about it."""

    tokenizer: Tokenizer
    kind: str
    json_text: str  # the tokenizer.json as read (less `removed`); its sha256 is the tokenizer's identity
    hash: str
    removed: dict[str, Any] = field(default_factory=dict)  # the file's own padding/truncation, dropped on load

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def special_tokens(self) -> dict[str, Optional[int]]:
        return special_token_ids(self.tokenizer)


def tokenizer_hash(json_text: str) -> str:
    return hashlib.sha256(json_text.encode("utf-8")).hexdigest()


def special_token_ids(tokenizer: Tokenizer) -> dict[str, Optional[int]]:
    """Role -> id for pad/unk/cls/sep/mask/eos; padding falls back to end-of-text (as with GPT-2)."""
    ids: dict[str, Optional[int]] = {}
    for role, names in ROLE_NAMES.items():
        ids[role] = next((tokenizer.token_to_id(n) for n in names if tokenizer.token_to_id(n) is not None), None)
    if ids["pad"] is None:
        ids["pad"] = ids["eos"]
    return ids


def make_tokenizer_config(*layers: dict[str, Any], source: str = "config") -> TokenizerTrainConfig:
    return build_config(TokenizerTrainConfig, *layers, source=source)


def build_tokenizer(config: TokenizerTrainConfig) -> tuple[Tokenizer, trainers.Trainer]:
    """An untrained tokenizer pipeline of the configured kind, and its trainer."""
    specials = KIND_SPECIAL_TOKENS[config.kind] + [t for t in config.special_tokens if t not in KIND_SPECIAL_TOKENS[config.kind]]
    show = config.progress and sys.stderr.isatty()
    if config.kind == "wordpiece":
        tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]", continuing_subword_prefix="##"))
        _bert_pipeline(tokenizer, config.lowercase, config.strip_accents, config.unicode_normalization,
                       split_cjk=config.split_cjk)
        trainer: trainers.Trainer = trainers.WordPieceTrainer(
            vocab_size=config.vocab_size, min_frequency=config.min_frequency, special_tokens=specials,
            continuing_subword_prefix="##", show_progress=show,
        )
    elif config.kind == "bpe":
        tokenizer = Tokenizer(models.BPE())
        tokenizer.normalizer = _normalizer(config, bert=False)
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
        trainer = trainers.BpeTrainer(
            vocab_size=config.vocab_size, min_frequency=config.min_frequency, special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=show,  # all 256 bytes: no unknowns
        )
    elif config.kind == "bpe-bert":
        # BPE pieces for an encoder: BERT's special tokens and [CLS] A [SEP] template, spaces kept as ▁
        # and punctuation split off, and no continuation marks. WordPiece gives a piece two ids, `不错`
        # at the start of a run of characters and `##不错` inside one, which in unspaced scripts
        # (Chinese) splits every word's statistics in two; here a piece has one id wherever it occurs.
        tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
        tokenizer.normalizer = _normalizer(config, bert=False)
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Metaspace(prepend_scheme="never"), pre_tokenizers.Punctuation()]
        )
        tokenizer.decoder = decoders.Metaspace(prepend_scheme="never")
        trainer = trainers.BpeTrainer(
            vocab_size=config.vocab_size, min_frequency=config.min_frequency, special_tokens=specials,
            show_progress=show,
        )
    else:
        tokenizer = Tokenizer(models.Unigram())
        tokenizer.normalizer = _normalizer(config, bert=False)
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        tokenizer.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(
            vocab_size=config.vocab_size, special_tokens=specials, unk_token="<unk>", show_progress=show,
        )
    return tokenizer, trainer


def _normalizer(config: TokenizerTrainConfig, bert: bool) -> Optional[normalizers.Normalizer]:
    steps: list[normalizers.Normalizer] = []
    if config.unicode_normalization:
        steps.append(getattr(normalizers, config.unicode_normalization.upper())())
    if config.strip_accents and not bert:
        steps += [normalizers.NFD(), normalizers.StripAccents()]
    if config.lowercase and not bert:
        steps.append(normalizers.Lowercase())
    return normalizers.Sequence(steps) if steps else None


def _bert_pipeline(tokenizer: Tokenizer, lowercase: bool, strip_accents: bool, unicode_form: Optional[str],
                   split_cjk: bool = True) -> None:
    """BERT's normaliser (each CJK character split off unless ``split_cjk`` is false, optional
    lower-casing/accent stripping), whitespace+punctuation pre-tokenizer, [CLS] A [SEP] (B [SEP])
    template and ## decoder."""
    bert = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=split_cjk, strip_accents=strip_accents, lowercase=lowercase
    )
    tokenizer.normalizer = (
        normalizers.Sequence([getattr(normalizers, unicode_form.upper())(), bert]) if unicode_form else bert
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")


def canonical_wordpiece_ids(tokenizer: Tokenizer) -> Tokenizer:
    """The same WordPiece tokenizer with reproducible ids. The Rust trainer appends the continuation form
    ("##x") of every single character last, in the order of a hash set, which changes from run to run (34
    of 2,057 ids differed between two trainings on the same 400 sentences); those trailing ids are
    reassigned in character order, so one corpus and config always give one tokenizer (and one model).
    Any other tokenizer is returned unchanged."""
    spec = json.loads(tokenizer.to_str())
    model = spec.get("model") or {}
    if model.get("type") != "WordPiece":
        return tokenizer
    prefix = model.get("continuing_subword_prefix", "##")
    by_id = sorted(model["vocab"].items(), key=lambda item: item[1])
    start = len(by_id)
    while start > 0 and by_id[start - 1][0].startswith(prefix) and len(by_id[start - 1][0]) == len(prefix) + 1:
        start -= 1
    tail = sorted(token for token, _ in by_id[start:])
    model["vocab"] = {**dict(by_id[:start]), **{token: by_id[start][1] + k for k, token in enumerate(tail)}}
    return Tokenizer.from_str(json.dumps(spec, ensure_ascii=False))


def _add_pair_template(tokenizer: Tokenizer) -> None:
    """[CLS] A [SEP] / [CLS] A [SEP] B [SEP] with segment ids 0/1, once [CLS] and [SEP] have ids."""
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    if cls is None or sep is None:
        return
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )


def strip_padding_and_truncation(tokenizer: Tokenizer) -> dict[str, Any]:
    """Disable the tokenizer's own padding and truncation; return the settings removed ({} if none).

    Hugging Face tokenizer.json files may pad every text to a fixed length and truncate at another
    (all-MiniLM-L6-v2: both 128). lmforge cuts at its own ``max_length`` and pads each batch to its
    longest example; a tokenizer that pads by itself hands the model 128 ids per text whatever
    ``data.max_length`` says, defeating dynamic padding and length bucketing, and the pads count
    as real tokens in the attention mask."""
    if tokenizer.padding is None and tokenizer.truncation is None:
        return {}
    as_file = json.loads(tokenizer.to_str())  # recorded as tokenizer.json spells them
    removed = {k: as_file[k] for k in ("padding", "truncation") if as_file.get(k)}
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return removed


def load_tokenizer(path: str | Path, lowercase: bool = True) -> LoadedTokenizer:
    """A tokenizer directory (tokenizer.json inside), a tokenizer.json, or a BERT vocab.txt; always
    without padding and truncation of its own (``removed`` names what the file had)."""
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise ConfigError(f"tokenizer not found: {path} (give a tokenizer directory, tokenizer.json or vocab.txt)")
    if path.suffix == ".txt":
        return _from_vocab_txt(path, lowercase)
    return tokenizer_from_json(path.read_text(encoding="utf-8"), str(path))


def tokenizer_from_json(json_text: str, path: str = "tokenizer.json") -> LoadedTokenizer:
    """A tokenizers JSON text (``path`` names it in errors), without padding and truncation of its own."""
    try:
        tokenizer = Tokenizer.from_str(json_text)
    except Exception as exc:  # the Rust error type is not importable; its message is the useful part
        raise ConfigError(f"{path}: not a tokenizers JSON file: {str(exc).splitlines()[0]}") from None
    model_type = json.loads(json_text).get("model", {}).get("type")
    if model_type not in _MODEL_KINDS:
        raise ConfigError(f"{path}: model type {model_type!r} is not one of WordPiece, BPE, Unigram")
    kind = _MODEL_KINDS[model_type]
    if kind == "bpe" and tokenizer.token_to_id("[MASK]") is not None:
        kind = "bpe-bert"  # BPE with BERT's special tokens: an encoder's
    removed = strip_padding_and_truncation(tokenizer)
    if removed:  # the text written onwards (model dirs, shards) is the normalised one; else the exact file
        json_text = tokenizer.to_str()
    return LoadedTokenizer(tokenizer, kind, json_text, tokenizer_hash(json_text), removed)


def _from_vocab_txt(path: Path, lowercase: bool) -> LoadedTokenizer:
    """BERT's WordPiece from a vocab.txt (one token per line, id = line number)."""
    try:
        model = models.WordPiece.from_file(str(path), unk_token="[UNK]")
    except Exception as exc:
        raise ConfigError(f"{path}: not a WordPiece vocab.txt: {str(exc).splitlines()[0]}") from None
    tokenizer = Tokenizer(model)
    _bert_pipeline(tokenizer, lowercase, lowercase, None)
    present = [t for t in BERT_SPECIAL_TOKENS if tokenizer.token_to_id(t) is not None]
    tokenizer.add_special_tokens(present)  # so they are never split and are skipped when decoding
    _add_pair_template(tokenizer)
    json_text = tokenizer.to_str()
    return LoadedTokenizer(tokenizer, "wordpiece", json_text, tokenizer_hash(json_text))


def coverage(loaded: LoadedTokenizer, texts: Iterable[str], batch: int = 1024) -> dict[str, Any]:
    """Unknown-token rate and tokens per character / per word (a CJK character counts as a word)."""
    unk = loaded.special_tokens["unk"]
    docs = tokens = unknown = unknown_chars = chars = words = 0
    buffer: list[str] = []

    def flush() -> None:
        nonlocal docs, tokens, unknown, unknown_chars
        for encoding in loaded.tokenizer.encode_batch(buffer, add_special_tokens=False):
            docs += 1
            tokens += len(encoding.ids)
            if unk is not None:
                for token_id, (start, end) in zip(encoding.ids, encoding.offsets):
                    if token_id == unk:
                        unknown += 1
                        unknown_chars += end - start
        buffer.clear()

    for text in texts:
        buffer.append(text)
        chars += len(text)
        words += len(units(text))
        if len(buffer) >= batch:
            flush()
    flush()
    return {
        "documents": docs,
        "characters": chars,
        "words": words,
        "tokens": tokens,
        "unknown_tokens": unknown,
        "unknown_token_rate": unknown / tokens if tokens else 0.0,
        "unknown_char_rate": unknown_chars / chars if chars else 0.0,
        "tokens_per_char": tokens / chars if chars else 0.0,
        "tokens_per_word": tokens / words if words else 0.0,
    }


def _data_files(data: str) -> tuple[Path, Optional[Path], str]:
    """(training file, coverage file, coverage split name) for a prepared directory or one file."""
    path = Path(data)
    if path.is_dir():
        train = split_file(path, "train")  # checks the directory is a finished prepare output first
        validation = find_split(path, "validation")
        return train, validation or train, "validation" if validation else "train"
    if not path.is_file():
        raise ConfigError(f"data not found: {path}")
    return path, path, "train (no validation split)"


def train_tokenizer(config: TokenizerTrainConfig) -> dict[str, Any]:
    """Run the stage; returns the metadata written to ``out/meta.json`` (with coverage)."""
    if not config.out:
        raise ConfigError("no output directory: give --out DIR")
    if not config.data and not config.from_file:
        raise ConfigError("nothing to train on: give --data DIR_OR_FILE (or from_file=PATH to adopt a tokenizer)")
    train_file, coverage_file, coverage_split = _data_files(config.data) if config.data else (None, None, "")
    started = time.perf_counter()
    if config.from_file:
        loaded = load_tokenizer(config.from_file, lowercase=bool(config.lowercase))
        config = config.model_copy(update={"kind": loaded.kind})  # config.yaml records what was adopted
    else:
        tokenizer, trainer = build_tokenizer(config)
        assert train_file is not None
        try:
            tokenizer.train_from_iterator(iter_texts(train_file, config.text_field), trainer=trainer)
        except Exception as exc:  # the Rust trainer's errors arrive as plain Exception
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"training the {config.kind} tokenizer on {train_file} failed: {exc} (vocab_size={config.vocab_size})") from None
        tokenizer = canonical_wordpiece_ids(tokenizer)
        if config.kind != "bpe":
            _add_pair_template(tokenizer)
        json_text = tokenizer.to_str()
        loaded = LoadedTokenizer(tokenizer, config.kind, json_text, tokenizer_hash(json_text))
    seconds = time.perf_counter() - started

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.json").write_text(loaded.json_text, encoding="utf-8")
    write_config(config, out / "config.yaml")
    write_hf_tokenizer_files(loaded, out)
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "kind": loaded.kind,
        "vocab_size": loaded.vocab_size,
        "special_tokens": loaded.special_tokens,
        "hash": loaded.hash,
        "source": config.from_file or str(train_file),
        "train_seconds": round(seconds, 3),
    }
    if loaded.removed:
        meta["removed"] = loaded.removed
    if coverage_file is not None:
        report = coverage(loaded, iter_texts(coverage_file, config.text_field))
        report["split"] = coverage_split
        (out / "coverage.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        meta["coverage"] = report
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    if config.progress:
        _print(meta)
    return meta


def write_hf_tokenizer_files(loaded: LoadedTokenizer, out: Path) -> None:
    """tokenizer_config.json so `PreTrainedTokenizerFast.from_pretrained(out)` knows the special tokens."""
    hf: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast"}
    for role, token_id in loaded.special_tokens.items():
        if token_id is not None:
            hf[_HF_ROLE_KEYS[role]] = loaded.tokenizer.id_to_token(token_id)
    (out / "tokenizer_config.json").write_text(json.dumps(hf, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _print(meta: dict[str, Any]) -> None:
    rows = [("kind", meta["kind"]), ("vocabulary", f"{meta['vocab_size']:,}"), ("seconds", f"{meta['train_seconds']:.2f}")]
    cov = meta.get("coverage")
    if cov:
        rows += [
            (f"unknown-token rate ({cov['split']})", f"{cov['unknown_token_rate']:.4%}"),
            ("tokens per character", f"{cov['tokens_per_char']:.3f}"),
            ("tokens per word", f"{cov['tokens_per_word']:.3f}"),
        ]
    print_summary("tokenizer", rows)
