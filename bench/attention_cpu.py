"""Attention on a CPU: PyTorch's fused SDPA kernel vs lmforge's explicit path, forward + backward, side by side.

lmforge.model.transformer.attention takes explicit matmuls + an fp32 softmax instead of
`F.scaled_dot_product_attention` for bf16/fp16 on a CPU when there are at most
EXPLICIT_ATTENTION_MAX_KEYS keys. This measures why, per shape (4 heads of 32 dimensions, the
quickstart's encoder; batch x length = 2,048 tokens), with and without a padding mask: the median of
`--repeats` rounds, each timing both implementations one after the other, reported as ratios. Then
the whole training step of the quickstart's pretraining (4 x 128 encoder, batch 16 x 128, MLM, AdamW,
bf16 autocast) with the dispatch on and off.

Usage: PYTHONPATH=. python bench/attention_cpu.py [--repeats 5] [--iters 20]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F

from lmforge.model import transformer
from lmforge.model.heads import LanguageModel
from lmforge.model.transformer import TransformerConfig
from lmforge.train.objectives import MLMMasker, MLMObjective

HEADS, HEAD_SIZE = 4, 32
SHAPES = ((32, 64), (16, 128), (8, 256), (4, 512), (2, 1024))  # (batch, length)


def _attention_step(batch: int, length: int, dtype: torch.dtype, masked: bool,
                    explicit: bool) -> Callable[[], None]:
    """One forward + backward of attention alone on fixed random inputs."""
    leaves = [torch.randn(batch, HEADS, length, HEAD_SIZE, requires_grad=True) for _ in range(3)]
    mask = None
    if masked:  # the last quarter of every row is padding
        keep = torch.ones(batch, length, dtype=torch.bool)
        keep[:, 3 * length // 4:] = False
        mask = keep[:, None, None, :]  # (B, 1, 1, T)

    def step() -> None:
        q, k, v = (t.to(dtype) for t in leaves)
        if explicit:
            out = transformer.explicit_attention(q, k, v, mask, False, 0.0)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out.float().sum().backward()

    return step


def _medians(first: Callable[[], None], second: Callable[[], None], repeats: int,
                  iters: int) -> tuple[float, float]:
    """Median ms per call of each, timed in alternating rounds so that machine noise hits both."""
    for fn in (first, second):
        fn()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, bucket in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            for _ in range(iters):
                fn()
            bucket.append((time.perf_counter() - start) / iters * 1000)
    return statistics.median(times[0]), statistics.median(times[1])


def _training_step(explicit: bool) -> Callable[[], None]:
    """The quickstart's pretraining step: 4 x 128 pre-LN encoder, 16k vocabulary, batch 16 x 128, MLM."""
    torch.manual_seed(0)
    cfg = TransformerConfig(vocab_size=16000, n_layers=4, d_model=128, n_heads=4, d_ff=512, max_positions=128,
                            norm="pre", dropout=0.0, attn_dropout=0.0)
    model = LanguageModel(cfg, ("mlm",))
    objective = MLMObjective(MLMMasker(16000, mask_id=4, special_ids=[0, 1, 2, 3, 4]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = {"input_ids": torch.randint(5, 16000, (16, 128)), "attention_mask": torch.ones(16, 128, dtype=torch.long)}
    limit = transformer.EXPLICIT_ATTENTION_MAX_KEYS if explicit else 0

    def step() -> None:
        saved, transformer.EXPLICIT_ATTENTION_MAX_KEYS = transformer.EXPLICIT_ATTENTION_MAX_KEYS, limit
        try:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = objective(model, batch)
            (out.loss_sum / out.n_tokens).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        finally:
            transformer.EXPLICIT_ATTENTION_MAX_KEYS = saved

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--iters", type=int, default=20)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; ms per forward + backward, "
          f"median of {args.repeats} rounds of {args.iters}\n")
    print("| dtype | padding mask | batch x length | SDPA ms | explicit ms | SDPA / explicit | lmforge uses |")
    print("|---|---|---|---:|---:|---:|---|")
    for dtype in (torch.bfloat16, torch.float32):
        for masked in (False, True):
            for batch, length in SHAPES:
                sdpa, explicit = _medians(_attention_step(batch, length, dtype, masked, False),
                                               _attention_step(batch, length, dtype, masked, True),
                                               args.repeats, args.iters)
                uses = ("explicit" if dtype != torch.float32 and length <= transformer.EXPLICIT_ATTENTION_MAX_KEYS
                        else "SDPA")
                print(f"| {str(dtype).removeprefix('torch.')} | {'yes' if masked else 'no'} | {batch} x {length} "
                      f"| {sdpa:.2f} | {explicit:.2f} | {sdpa / explicit:.2f}x | {uses} |")
    fused, ours = _medians(_training_step(False), _training_step(True), args.repeats, max(1, args.iters // 4))
    print(f"\nQuickstart pretraining step (batch 16 x 128, bf16 autocast): SDPA {fused:.1f} ms, "
          f"explicit {ours:.1f} ms: {2048 / fused * 1000:,.0f} vs {2048 / ours * 1000:,.0f} tokens/s, "
          f"{fused / ours:.2f}x")


if __name__ == "__main__":
    main()
