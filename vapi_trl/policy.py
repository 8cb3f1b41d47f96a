"""The contract between `VAPiTrainer` and a policy: what an image-token generator must expose to be post-trained."""

import inspect
from typing import Any, Protocol, runtime_checkable

import torch


class PolicyOutput(Protocol):
    """What the trainer reads from a policy's forward: `logits` `(batch_size, num_image_tokens, codebook_size)`."""

    logits: torch.FloatTensor


@runtime_checkable
class ImageTokenPolicy(Protocol):
    """
    A policy `VAPiTrainer` can post-train: a teacher-forced image-token generator that takes tensors only. Its family
    processor (`processor_class`, a `vapi_trl.models.ImageTokenPolicyProcessor`) turns dataset rows into the
    condition tensors.

    `LlamaGenForClassToImage`, `LlamaGenForTextToImage`, `JanusForImageGeneration` and `VARForClassToImage` implement
    it; any other `PreTrainedModel` that does can be trained too. The trainer checks it at construction
    (`check_policy`).

    Attributes:
        codebook_size (`int`): number of image-token ids K.
        num_image_tokens (`int`): tokens N per image (the length of `target_ids`).
        condition_columns (`tuple[str, ...]`): dataset columns holding the condition, e.g. `("class_label",)` or
            `("prompt",)`.
        processor_class (`type`, *optional*): the family processor; without it, pass the processor to the trainer.
    """

    codebook_size: int
    num_image_tokens: int
    condition_columns: tuple[str, ...]

    def drop_condition(self, condition: dict[str, torch.Tensor], drop: torch.Tensor) -> dict[str, torch.Tensor]:
        """`condition` with the rows where `drop` `(batch_size,)` bool is set replaced by the null condition."""
        ...

    def forward(
        self, *, context_ids: torch.LongTensor, cfg_scale: float = 1.0, **condition: torch.Tensor
    ) -> PolicyOutput:
        """One teacher-forced pass: `context_ids` `(batch_size, num_image_tokens - 1)` and the condition kwargs give
        `logits` `(batch_size, num_image_tokens, codebook_size)`, where index t predicts image token t."""
        ...


_ATTRIBUTES = ("codebook_size", "num_image_tokens", "condition_columns")
_METHODS = ("drop_condition", "forward")
_FORWARD_ARGUMENTS = ("context_ids", "cfg_scale")


def check_policy(policy: Any) -> None:
    """
    Raise a `TypeError` naming every member of `ImageTokenPolicy` that `policy` lacks (attributes, methods, and the
    `context_ids` / `cfg_scale` arguments of its forward).
    """
    missing = [name for name in _ATTRIBUTES if not hasattr(policy, name)]
    missing += [f"{name}()" for name in _METHODS if not callable(getattr(policy, name, None))]
    if "forward()" not in missing:
        parameters = inspect.signature(policy.forward).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
        if not takes_any:
            missing += [f"forward({name}=...)" for name in _FORWARD_ARGUMENTS if name not in parameters]
    if missing:
        raise TypeError(
            f"{type(policy).__name__} is not an image-token policy VAPiTrainer can train: it lacks {missing}. A "
            "policy exposes `codebook_size`, `num_image_tokens`, `condition_columns`, `drop_condition(condition, drop)` "
            "and `forward(**condition, context_ids, cfg_scale)` returning `.logits` (see "
            "`vapi_trl.policy.ImageTokenPolicy`); its processor turns rows into the condition."
        )


__all__ = ["ImageTokenPolicy", "PolicyOutput", "check_policy"]
