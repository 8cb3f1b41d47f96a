"""Training callbacks of `VAPiTrainer`: the guard that skips optimizer steps with non-finite gradients."""

import logging
from typing import Any

import torch
from accelerate.utils import gather
from transformers import TrainerCallback


logger = logging.getLogger(__name__)


class NonFiniteStepGuard(TrainerCallback):
    """Skips optimizer steps whose gradients are not finite, so that weights and optimizer state never see NaN.

    Runs between gradient clipping and `optimizer.step()`. Setting every gradient to None makes AdamW leave the
    parameters and its moments untouched. The decision is made on all processes' flags, so ranks stay in step. FSDP2
    gradients are sharded DTensors: each rank checks its local shard. Under DeepSpeed the step has already run inside
    `accelerator.backward` (`engine.step()`), on gradients partitioned across ranks (`p.grad` is None): DeepSpeed's
    ZeRO optimizers skip a step whose gradient norm is not finite themselves (bf16 `check_grad_overflow`, on by
    default, and the grad-norm check under clipping), agreed across ranks, and `engine.was_step_applied()` says so;
    the guard counts those steps and stops the run in the same way.

    Args:
        trainer ([`~transformers.Trainer`]): the trainer whose steps are guarded (its model, optimizer, accelerator).

    Attributes:
        skipped_steps (`int`): optimizer steps skipped so far.
        consecutive_bad_steps (`int`): skipped steps since the last applied one; the run stops at
            `args.max_consecutive_bad_steps`.
    """

    def __init__(self, trainer: Any):
        self.trainer = trainer
        self.skipped_steps = 0
        self.consecutive_bad_steps = 0

    def _step_is_bad(self) -> bool:
        trainer = self.trainer
        if trainer.is_deepspeed_enabled:
            return not trainer.model_wrapped.was_step_applied()
        grads = [_local_shard(p.grad) for p in trainer.model.parameters() if p.grad is not None]
        finite = torch.stack([torch.isfinite(g).all() for g in grads]).all() if grads else torch.tensor(True)
        return gather(finite.logical_not().float().reshape(1).to(trainer.accelerator.device)).sum().item() > 0

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if not self._step_is_bad():
            self.consecutive_bad_steps = 0
            return
        if not self.trainer.is_deepspeed_enabled:
            self.trainer.optimizer.zero_grad(set_to_none=True)
        self.skipped_steps += 1
        self.consecutive_bad_steps += 1
        logger.warning(
            "Skipped optimizer step %d: non-finite gradients (from a non-finite reward, loss or logit). %d "
            "consecutive, %d in total.",
            state.global_step + 1,
            self.consecutive_bad_steps,
            self.skipped_steps,
        )
        if self.consecutive_bad_steps >= args.max_consecutive_bad_steps:
            raise RuntimeError(
                f"{self.consecutive_bad_steps} consecutive optimizer steps had non-finite gradients "
                f"(max_consecutive_bad_steps={args.max_consecutive_bad_steps}); the weights are those of step "
                f"{state.global_step}. Check the data and rewards for NaN/inf, lower the learning rate, or train in "
                "fp32; resume from the last checkpoint with resume_from_checkpoint=True."
            )


def _local_shard(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's part of a (possibly FSDP2-sharded DTensor) gradient."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


__all__ = ["NonFiniteStepGuard"]
