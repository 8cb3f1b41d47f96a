"""The batch one VA-π step hands from sampling (`_generate_and_score_completions`) to the loss (`_compute_loss`)."""

from dataclasses import MISSING, dataclass, fields

import torch


# TRL buffers the generation batch and cuts it into `steps_per_generation` micro-batches with `shuffle_sequence_dict`
# and `split_tensor_dict` (`GRPOTrainer._prepare_inputs`), which index every value of a FLAT dict of tensors along
# dim 0: a nested dict or a dataclass would be taken for a sequence of keys or fields. So the batch travels as a flat
# dict whose condition tensors are namespaced by this prefix, and `StepBatch.from_dict` rebuilds the typed view,
# refusing any key it does not know, so that no stray key can become a forward argument of the policy.
CONDITION_PREFIX = "condition."


@dataclass
class StepBatch:
    """
    One row per image (U images, G samples each, N image tokens).

    Attributes:
        condition (`dict[str, torch.Tensor]`): the policy's condition kwargs (`prepare_condition`), each
            `(U, ...)`, e.g. `class_labels` `(U,)`. Never dropped: condition dropout is applied by the loss forward.
        context_ids (`torch.LongTensor` of shape `(U, N - 1)`): the (corrupted) teacher-forcing context.
        target_ids (`torch.LongTensor` of shape `(U, N)`): the clean tokens x* of the image.
        completion_ids (`torch.LongTensor` of shape `(U, G, N)`): the sampled token sequences.
        old_per_token_logps (`torch.FloatTensor` of shape `(U, G, N)`): their log-probabilities under the sampling
            pass.
        advantages (`torch.FloatTensor` of shape `(U, G)`): group-normalised advantages (zero for invalid images).
        valid (`torch.BoolTensor` of shape `(U,)`): images that decoded; the others have stand-in targets.
        ref_per_token_logps (`torch.FloatTensor` of shape `(U, G, N)`, *optional*): reference-policy log-probabilities,
            with the KL term only.
    """

    condition: dict[str, torch.Tensor]
    context_ids: torch.LongTensor
    target_ids: torch.LongTensor
    completion_ids: torch.LongTensor
    old_per_token_logps: torch.FloatTensor
    advantages: torch.FloatTensor
    valid: torch.BoolTensor
    ref_per_token_logps: torch.FloatTensor | None = None

    def to_dict(self) -> dict[str, torch.Tensor]:
        """The flat dict TRL buffers and splits: condition keys prefixed with `CONDITION_PREFIX`, `None`s left out."""
        flat = {f"{CONDITION_PREFIX}{key}": value for key, value in self.condition.items()}
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name != "condition" and value is not None:
                flat[field.name] = value
        return flat

    @classmethod
    def from_dict(cls, inputs: dict[str, torch.Tensor]) -> "StepBatch":
        """The typed view of a flat batch written by `to_dict` (or a slice of one). Raises a `KeyError` naming any key
        that is neither a field nor a prefixed condition key, and any required field that is absent."""
        names = {field.name for field in fields(cls)} - {"condition"}
        unknown = [key for key in inputs if key not in names and not key.startswith(CONDITION_PREFIX)]
        if unknown:
            raise KeyError(
                f"unexpected key(s) {unknown} in a VA-π step batch; condition tensors must be named "
                f"'{CONDITION_PREFIX}<forward argument>' (see `StepBatch`)."
            )
        required = [field.name for field in fields(cls) if field.name != "condition" and field.default is MISSING]
        missing = [name for name in required if name not in inputs]
        if missing:
            raise KeyError(f"a VA-π step batch lacks {missing}.")
        prefixed = [key for key in inputs if key.startswith(CONDITION_PREFIX)]
        condition = {key.removeprefix(CONDITION_PREFIX): inputs[key] for key in prefixed}
        return cls(condition=condition, **{key: value for key, value in inputs.items() if key in names})

    def to(self, device: torch.device | str) -> "StepBatch":
        """This batch with every tensor on `device`."""
        return StepBatch.from_dict({key: value.to(device) for key, value in self.to_dict().items()})


__all__ = ["CONDITION_PREFIX", "StepBatch"]
