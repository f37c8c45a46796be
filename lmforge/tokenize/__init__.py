"""Tokenizers, packed token shards and the datasets that stream them into a training loop."""
