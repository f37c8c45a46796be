"""The fine-tuning fixtures (a tiny pretrained model dir, small prepared splits of the real corpora), for
the tests of evaluation and explanation that need a fine-tuned model."""

from tests.finetune.conftest import _one_thread, base_dir, reviews_small, tokenizer_file  # noqa: F401
