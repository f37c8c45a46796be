"""Sharded data parallelism under torchrun (``train.parallel: fsdp``): FSDP2's ``fully_shard`` applied
from outside the model, to each transformer block and then to the root.

Between the all-gathers of a forward and a backward pass a rank holds 1/world of every parameter,
gradient and optimizer moment. Training runs on a sharded copy of the caller's module; the caller's
module gives up its parameter storage meanwhile and gets the trained weights back at the end (and, on
rank 0, for each checkpoint). So checkpoints, model directories and every caller see a plain module in
the one-process format: a checkpoint written by sharded ranks resumes them exactly and loads into one
process, and the optimizer state goes in keyed as a one-process ``optimizer.state_dict()`` keys it.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
from typing import Any, Callable, Iterator, Optional

import torch
from torch import Tensor, nn

from lmforge.config import ConfigError
from lmforge.model.heads import transformer_blocks
from lmforge.train.distributed import DistInfo

# the dtype FSDP2 all-gathers parameters in and computes with; gradients are reduced in fp32 always
_PARAM_DTYPES = {"bf16": torch.bfloat16, "fp32": None}


def _give_freed_memory_back() -> None:
    """Fix glibc's mmap threshold (128 KiB), so every large block freed goes back to the system. By
    default glibc raises the threshold to the size of each large block freed, keeping later ones in a
    heap it seldom shrinks; FSDP frees and gathers every block's parameters again each step, and on CPU
    the sharding then saved almost nothing: peak RSS per rank 0.95x of DDP's, against 0.69x with the
    threshold fixed (bench/fsdp_memory.py, its 8 x 512 model; AVX512 CPU, 2026-12-04). Large tensors
    page-fault on first touch then, which costs time; bench/fsdp_memory.py prints it beside the memory."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, 128 * 1024)  # -3: M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc: its allocator has its own policy
        pass


class FrozenOptimizerState:
    """An optimizer state_dict gathered once (a collective, on every rank) for rank 0 to write: what
    ``checkpoint.save_checkpoint`` asks of an optimizer is its ``state_dict()``."""

    def __init__(self, state: dict[str, Any]) -> None:
        self._state = state

    def state_dict(self) -> dict[str, Any]:
        return self._state


class ShardedTraining:
    """The sharded copy of ``base`` that trains, and the moves of full state between it and ``base``.

    Every method that gathers or scatters is a collective: all ranks call it, in the same order."""

    def __init__(self, base: nn.Module, info: DistInfo, precision: str,
                 prepare: Optional[Callable[[nn.Module], None]] = None) -> None:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        if precision not in _PARAM_DTYPES:
            # GradScaler's skip decision is per rank: sharded fp16 would need it agreed across ranks
            raise ConfigError(f"train.parallel=fsdp: precision {precision} is not supported (bf16 or fp32)")
        if transformer_blocks(base) is None:
            raise ConfigError("train.parallel=fsdp needs a model with transformer blocks (blocks or backbone.blocks)")
        self.base, self.info = base, info
        if next(base.parameters()).device.type == "cpu":
            _give_freed_memory_back()
        module = copy.deepcopy(base)
        if prepare is not None:
            prepare(module)  # activation checkpointing: on the copy, whose blocks are the ones called
        policy = MixedPrecisionPolicy(param_dtype=_PARAM_DTYPES[precision], reduce_dtype=torch.float32)
        for block in transformer_blocks(module) or ():
            fully_shard(block, mp_policy=policy)
        fully_shard(module, mp_policy=policy)
        self.module = module
        self._release()

    def local_share(self) -> float:
        """The fraction of the parameters' elements this rank holds between all-gathers (1/world or so)."""
        params = list(self.module.parameters())
        local = sum(p.to_local().numel() if hasattr(p, "to_local") else p.numel() for p in params)
        return local / max(sum(p.numel() for p in params), 1)

    # ------------------------------------------------------------ the caller's module

    def _release(self) -> None:
        """Give ``base``'s parameter storage up (the Parameter objects stay, and so does weight tying)."""
        for p in self.base.parameters():
            p.data = torch.empty(0, dtype=p.dtype, device=p.device)

    def _gather_into_base(self, everywhere: bool) -> None:
        """Each full parameter into ``base`` (on rank 0 only unless ``everywhere``), one at a time, so
        at most one parameter is held twice."""
        from torch.distributed.fsdp import FSDPModule

        for module in self.module.modules():  # after an evaluation the root's parameters stay gathered
            if isinstance(module, FSDPModule):
                module.reshard()
        sharded = dict(self.module.named_parameters())
        for name, p in self.base.named_parameters():
            full = sharded[name].full_tensor()  # type: ignore[attr-defined]  # an all-gather: every rank, in order
            if everywhere or self.info.is_main:
                # it can be a view into a padded buffer, which safetensors refuses to save: then a copy
                compact = full.is_contiguous() and full.untyped_storage().nbytes() == full.nbytes
                p.data = full if compact else full.clone()
            del full

    @contextlib.contextmanager
    def full_state(self, optimizer: torch.optim.Optimizer) -> Iterator[tuple[nn.Module, FrozenOptimizerState]]:
        """``base`` with the current weights and the optimizer's full state, on rank 0 (for a checkpoint);
        ``base`` gives the storage up again afterwards."""
        self._gather_into_base(everywhere=False)
        try:
            yield self.base, FrozenOptimizerState(self.optimizer_state(optimizer))
        finally:
            self._release()

    def finish(self) -> nn.Module:
        """The trained weights into ``base`` on every rank; the sharded copy is not used after this."""
        self._gather_into_base(everywhere=True)
        return self.base

    # ------------------------------------------------------------ optimizer state

    def _optimizer_fqns(self, optimizer: torch.optim.Optimizer) -> list[str]:
        """Parameter names in the order a one-process optimizer.state_dict() numbers them."""
        names = {id(p): name for name, p in self.module.named_parameters()}
        return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """The full optimizer state, numbered as one process numbers it (rank 0; empty elsewhere)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        full = get_optimizer_state_dict(self.module, optimizer,
                                        options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if not self.info.is_main:
            return {}
        index = {name: i for i, name in enumerate(self._optimizer_fqns(optimizer))}
        return {
            "state": {index[name]: value for name, value in full["state"].items()},
            "param_groups": [{**g, "params": [index[name] for name in g["params"]]} for g in full["param_groups"]],
        }

    def load_optimizer_state(self, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        """Shard a one-process optimizer state_dict (read by every rank) into ``optimizer``."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        fqns = self._optimizer_fqns(optimizer)
        keyed = {
            "state": {fqns[int(i)]: value for i, value in state["state"].items()},
            "param_groups": [{**g, "params": [fqns[int(i)] for i in g["params"]]} for g in state["param_groups"]],
        }
        set_optimizer_state_dict(self.module, optimizer, keyed, options=StateDictOptions(full_state_dict=True))

    # ------------------------------------------------------------ gradients

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        """Accumulate gradients locally (micro-batches before the last of a step)."""
        self.module.set_requires_gradient_sync(False)  # type: ignore[operator]
        try:
            yield
        finally:
            self.module.set_requires_gradient_sync(True)  # type: ignore[operator]


def local_shards(grads: list[Tensor]) -> list[Tensor]:
    """This rank's pieces of sharded (DTensor) gradients: views, so in-place changes reach the grads."""
    return [g.to_local() if hasattr(g, "to_local") else g for g in grads]
