"""Configuration of `lmforge serve`."""

from __future__ import annotations

from pydantic import Field

from lmforge.config import Section


class LimitsConfig(Section):
    max_chars: int = Field(2000, gt=0, description="Longest accepted text, in characters (longer: 413).")
    max_batch: int = Field(64, gt=0, description="Most texts in one request (more: 413).")
    max_new_tokens: int = Field(256, gt=0, description="Largest max_new_tokens a /v1/generate request may ask for.")


class MicroBatchConfig(Section):
    enabled: bool = Field(True, description="Group concurrent requests into one forward pass.")
    max_size: int = Field(32, gt=0, description="Most texts per forward pass.")
    max_wait_ms: float = Field(0.0, ge=0, description="How long a request that finds the model idle waits for "
                               "company; under load, batches form from the requests queued during the previous pass.")


class ServeConfig(Section):
    model: str = Field("", description="Model directory (lmforge fp32/int8/ONNX, or Hugging Face BERT/GPT-2).")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, lt=65536)
    batch_size: int = Field(32, gt=0, description="Predictor batch size.")
    threads: int = Field(0, ge=0, description="torch intra-op threads; 0 keeps torch's default.")
    index: str = Field("", description="A vector index (`lmforge index`) built with this model: enables /v1/search.")
    limits: LimitsConfig = LimitsConfig()
    micro_batch: MicroBatchConfig = MicroBatchConfig()
