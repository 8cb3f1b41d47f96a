"""Pieces shared by the policy families: the teacher-forced output, strict loading (one check and message,
`strict_loading_error`, for `from_pretrained` and the converters' state dicts), the converters' one reader of official
checkpoints, sizes and checks of image-token policies, and the class-condition interface of VAPiTrainer."""

import argparse
import math
import os
import pickle
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import GenerationConfig
from transformers.utils import ModelOutput


@dataclass
class ImageTokenLogitsOutput(ModelOutput):
    """
    Output of a teacher-forced policy forward (`LlamaGenForClassToImage`, `LlamaGenForTextToImage`,
    `JanusForImageGeneration`, `VARForClassToImage`).

    Args:
        logits (`torch.FloatTensor` of shape `(batch_size, num_image_tokens, codebook_size)`):
            fp32 scores over the codebook; index `t` predicts image token `t` (for VAR, flat token t of scale k(t),
            from the condition and the scales before k(t)). Guided when `cfg_scale != 1`.
    """

    logits: torch.FloatTensor | None = None


def strict_loading_error(
    what: str, missing: Sequence[str], unexpected: Sequence[str], mismatched: Sequence[str] = (), hint: str = ""
) -> ValueError | None:
    """
    The error of a strict load that found missing, unexpected or mis-shaped weights, one line per kind with every key
    (named after `what`, followed by `hint`), or `None` when nothing is wrong: the one message of both strict loaders
    (`StrictLoadingMixin.from_pretrained` and the converters' `load_state_dict_strict`).
    """
    if not (missing or unexpected or mismatched):
        return None
    lines = [f"The {what} checkpoint does not match the model architecture."]
    if missing:
        lines.append(f"Missing keys ({len(missing)}): {format_keys(missing)}")
    if unexpected:
        lines.append(f"Unexpected keys ({len(unexpected)}): {format_keys(unexpected)}")
    if mismatched:
        lines.append(f"Shape mismatches ({len(mismatched)}): {format_keys(mismatched, limit=8)}")
    if hint:
        lines.append(hint)
    return ValueError("\n".join(lines))


class StrictLoadingMixin:
    """`from_pretrained` that raises on missing or unexpected weights (`strict_loading_error`).

    transformers only warns and re-initialises weights missing from a checkpoint, so a checkpoint of another
    architecture (e.g. fewer layers) would load silently with random layers. Subclasses name the converter to suggest
    in `_conversion_hint`.
    """

    _conversion_hint = "convert official checkpoints with the family's `vapi-trl convert-*` command"

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`, strict unless `strict=False` is passed."""
        strict = kwargs.pop("strict", True)
        want_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs)
        error = strict_loading_error(
            f"{os.fspath(pretrained_model_name_or_path)!r} ({cls.__name__}, {model.config.__class__.__name__})",
            list(info.get("missing_keys", [])),
            list(info.get("unexpected_keys", [])),
            hint=f"Check that the checkpoint and config describe the same architecture ({cls._conversion_hint}), or "
            "pass strict=False to load anyway.",
        )
        if strict and error is not None:
            raise error
        return (model, info) if want_info else model


class ImageTokenPolicyMixin:
    """Sizes, parameters and input checks shared by the image-token policies built on `PreTrainedModel`."""

    @property
    def codebook_size(self) -> int:
        """Number of image-token ids K (`config.vocab_size`)."""
        return self.config.vocab_size

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters the optimizer should see: every parameter with `requires_grad` (frozen buffers are left out)."""
        return [p for p in self.parameters() if p.requires_grad]

    def _ensure_generation_config(self) -> None:
        # TRL writes pad/eos ids into `model.generation_config`; transformers only creates one for `GenerationMixin`.
        if getattr(self, "generation_config", None) is None:
            self.generation_config = GenerationConfig()


def check_context_ids(context_ids: torch.Tensor, batch_size: int, expected: int, alone: str | None = None) -> None:
    """
    Check the teacher-forcing input of a policy's `forward`: an integer tensor `(batch_size, expected)`.

    Args:
        context_ids: the value to check.
        batch_size (`int`): rows of the condition.
        expected (`int`): context length, `num_image_tokens - 1`.
        alone (`str`, *optional*): what runs without context (e.g. `"the prompt"`); when given, length 0 is allowed.

    Raises:
        `TypeError` for a non-integer value, `ValueError` for a wrong shape.
    """
    if not isinstance(context_ids, torch.Tensor) or context_ids.dtype.is_floating_point:
        got = context_ids.dtype if isinstance(context_ids, torch.Tensor) else type(context_ids).__name__
        raise TypeError(f"`context_ids` must be an integer tensor, got {got}.")
    lengths = (expected,) if alone is None else (0, expected)
    if context_ids.dim() != 2 or context_ids.shape[0] != batch_size or context_ids.shape[1] not in lengths:
        or_empty = "" if alone is None else f" (or length 0 for {alone} alone)"
        raise ValueError(
            f"`context_ids` must have shape (batch_size, num_image_tokens - 1) = ({batch_size}, {expected}){or_empty}, "
            f"got {tuple(context_ids.shape)}."
        )


def torch_load_failure_reason(error: BaseException) -> str:
    """
    The reason a `torch.load(weights_only=True)` failed, in one line, without torch's advice to retry with
    `weights_only=False` (which would run arbitrary code from an untrusted file).
    """
    for line in (line.strip() for line in str(error).splitlines()):
        line = line.removeprefix("WeightsUnpickler error: ")
        if not line or "weights_only" in line or "two options" in line:
            continue
        if line.startswith(("(1)", "(2)", "Check the documentation", "Please file", "Weights only load failed")):
            continue
        return line
    return type(error).__name__


# What `torch.load(weights_only=True)` raises on a truncated, corrupt or non-checkpoint file.
_TORCH_LOAD_ERRORS = (
    pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, ValueError, TypeError, IndexError,
)  # fmt: skip
# Prefixes of wrapped models' parameter names: DDP (`module.`) and `torch.compile` (`_orig_mod.`).
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def read_official_state_dict(
    path: str | os.PathLike, state_dict_keys: Sequence[str], expected_file: str
) -> dict[str, torch.Tensor]:
    """
    Read an official PyTorch checkpoint and return its flat state dict (name -> tensor, on CPU): the one reader of
    the converters.

    The file is read with `torch.load(weights_only=True)` (memory-mapped when it is a zip archive); only
    `argparse.Namespace` (the `"args"` entry of DDP training checkpoints) is allowed beyond tensors and containers. It
    may be a raw state dict or a training checkpoint whose first entry among `state_dict_keys` holds it. `module.`
    (DDP) and `_orig_mod.` (`torch.compile`) prefixes are stripped.

    Args:
        path: the file.
        state_dict_keys (`Sequence[str]`): entries of a training checkpoint that may hold the state dict, in order.
        expected_file (`str`): what to pass instead, for the error message (e.g. "the official VAR file (var_d16.pth)").

    Raises:
        `FileNotFoundError` if `path` is not a file; `ValueError` naming the file if it is truncated, corrupt, not a
        PyTorch checkpoint, pickles custom classes, or holds no state dict of tensors.
    """
    import zipfile

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Checkpoint file {path!r} does not exist.")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except _TORCH_LOAD_ERRORS as error:
        raise ValueError(
            f"{path!r} is not a PyTorch checkpoint that can be read safely (torch.load(weights_only=True) failed: "
            f"{torch_load_failure_reason(error)}): the file is truncated, corrupt, not a checkpoint, or pickles custom "
            f"classes. Pass {expected_file}, downloaded again if it is incomplete."
        ) from error
    state_dict = obj if _is_state_dict(obj) else None
    for key in state_dict_keys if state_dict is None and isinstance(obj, Mapping) else ():
        if _is_state_dict(obj.get(key)):
            state_dict = obj[key]
            break
    if state_dict is None:
        found = sorted(map(str, obj.keys()))[:10] if isinstance(obj, Mapping) else type(obj).__name__
        raise ValueError(
            f"{path!r} does not hold a state dict of tensors (found: {found}): expected a dict of tensors or a dict "
            f"with one under {list(state_dict_keys)}."
        )
    result = {}
    for name, tensor in state_dict.items():
        for prefix in _WRAPPER_PREFIXES:
            name = name.removeprefix(prefix)
        result[name] = tensor
    return result


def format_keys(keys: Sequence[str], limit: int = 20) -> str:
    """The sorted `keys` as one comma-separated string, the first `limit` of them and a count of the rest."""
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_state_dict_strict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], what: str, hint: str = ""
) -> None:
    """
    `model.load_state_dict(state_dict, strict=True, assign=True)` with one `ValueError` listing every missing,
    unexpected and mis-shaped key (`strict_loading_error`, named after `what`, followed by `hint`) instead of PyTorch's
    first failure: the converters' strict load (`StrictLoadingMixin` is its `from_pretrained` counterpart, with the
    same check and message).
    """
    expected = model.state_dict()
    missing = [name for name in expected if name not in state_dict]
    unexpected = [name for name in state_dict if name not in expected]
    mismatched = [
        f"{name}: checkpoint {tuple(state_dict[name].shape)} vs model {tuple(expected[name].shape)}"
        for name in expected
        if name in state_dict and tuple(state_dict[name].shape) != tuple(expected[name].shape)
    ]
    error = strict_loading_error(what, missing, unexpected, mismatched, hint)
    if error is not None:
        raise error
    model.load_state_dict(state_dict, strict=True, assign=True)
    on_meta = [name for name, tensor in model.state_dict().items() if tensor.is_meta]
    if on_meta:
        raise ValueError(f"The {what} model still has uninitialised tensors after loading: {format_keys(on_meta)}.")


def check_reloaded_state_dict(
    expected: Mapping[str, torch.Tensor], reloaded: Mapping[str, torch.Tensor], path: str
) -> None:
    """Raise a `RuntimeError` naming the tensors that a save of `expected` reloaded from `path` lost, changed or added
    (the converters' check of what they wrote)."""
    changed = [
        name for name in expected if name not in reloaded or not torch.equal(expected[name], reloaded[name].cpu())
    ]
    added = [name for name in reloaded if name not in expected]
    if changed or added:
        raise RuntimeError(
            f"Reloading {path!r} changed {len(changed)} tensors and added {len(added)}: {format_keys(changed + added)}."
        )


def class_label_value(value: Any) -> int:
    """
    A dataset's class label as an `int`. Integers (Python, numpy, 0-dim tensors) and integral floats (`3.0`, as
    pandas writes an int column with gaps) are taken as is; `3.7`, NaN, strings and bools raise instead of being
    truncated, since `int(3.7)` would silently train on class 3.
    """
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"class_label must be an integer class id, got {value!r} ({type(value).__name__}). Map names to ids "
            "first, e.g. with a datasets ClassLabel feature (dataset.class_encode_column)."
        )
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise ValueError(
                f"class_label must be an integer class id, got {value!r}: fix or drop that row (a float label column "
                "is only accepted when every value is a whole number)."
            )
        value = int(value)
    return value


class ConditionDropout(nn.Dropout):
    """Classifier-free-guidance condition dropout: in train mode, each row's condition is replaced by the null
    condition with probability `p`, one draw per row (official LlamaGen `LabelEmbedder.token_drop`).

    A `nn.Dropout` subclass, so whatever switches dropout off (`eval()`, TRL's `disable_dropout`, VAPiTrainer's
    `loss_forward_mode="eval"`) switches condition dropout off too.
    """

    def forward(self, condition: torch.Tensor, null: torch.Tensor) -> torch.Tensor:
        """`condition` `(batch_size, ...)` with the rows drawn for dropout replaced by `null` (broadcastable)."""
        if not self.training or self.p == 0:
            return condition
        drop = torch.rand(condition.shape[0], device=condition.device) < self.p
        return torch.where(drop.view(-1, *[1] * (condition.dim() - 1)), null, condition)


class DeprecatedPrepareConditionMixin:
    """`policy.prepare_condition(rows, processing_class)`, kept until vapi-trl 0.3: it delegates to the family
    processor (`policy.processor_class`), which now turns dataset rows into the policy's condition tensors."""

    # The family processor (`vapi_trl.models.processing_utils.ImageTokenPolicyProcessor` subclass); set per family.
    processor_class: type | None = None

    def prepare_condition(self, rows: list[dict], processing_class: Any = None) -> dict[str, torch.Tensor]:
        """Deprecated: `processor.prepare_condition(rows, device)` of the family processor instead (see
        `vapi_trl.models.processing_utils`). Builds it from `processing_class` (the text tokenizer/encoder, or
        already a family processor), records what the policy reads from it, and returns its condition tensors on
        the policy's device."""
        warnings.warn(
            f"`{type(self).__name__}.prepare_condition(rows, processing_class)` is deprecated and will be removed in "
            f"vapi-trl 0.3: the family processor prepares inputs, `{self.processor_class.__name__}.from_policy("
            "policy, image_tokenizer, processing_class).prepare_condition(rows)`.",
            FutureWarning,
            stacklevel=2,
        )
        if callable(getattr(processing_class, "prepare_policy", None)):
            processor = processing_class
        else:
            processor = self.processor_class.from_policy(self, text_processor=processing_class)
        processor.prepare_policy(self)
        return processor.prepare_condition(rows, device=self.device)


class ClassConditionMixin(DeprecatedPrepareConditionMixin):
    """The condition interface VAPiTrainer uses, for class-conditional policies (`config.num_classes` real classes;
    id `num_classes` is the null class of classifier-free guidance)."""

    condition_columns: tuple[str, ...] = ("class_label",)

    @property
    def null_class_id(self) -> int:
        """Class id of the null condition used for classifier-free guidance (`config.num_classes`)."""
        return self.config.num_classes

    def uncond(self, class_labels: torch.LongTensor) -> torch.LongTensor:
        """Null-class labels shaped like `class_labels` (`(batch_size,)`, all `null_class_id`)."""
        return torch.full_like(class_labels, self.null_class_id)

    def _check_class_labels(self, class_labels: torch.Tensor) -> None:
        if not isinstance(class_labels, torch.Tensor):
            raise TypeError(
                f"`class_labels` must be a LongTensor of shape (batch_size,), got {type(class_labels).__name__}."
            )
        if class_labels.dim() != 1 or class_labels.dtype.is_floating_point or class_labels.dtype == torch.bool:
            raise ValueError(
                f"`class_labels` must be an integer tensor of shape (batch_size,) with ids in "
                f"[0, {self.null_class_id}], got dtype {class_labels.dtype} and shape {tuple(class_labels.shape)}."
            )

    def drop_condition(self, condition: dict[str, torch.Tensor], drop: torch.Tensor) -> dict[str, torch.Tensor]:
        """Replace the condition of rows where `drop` `(batch_size,)` bool is set by the null class."""
        labels = condition["class_labels"]
        return {"class_labels": torch.where(drop.to(labels.device), self.uncond(labels), labels)}


__all__ = [
    "ClassConditionMixin",
    "ConditionDropout",
    "DeprecatedPrepareConditionMixin",
    "ImageTokenLogitsOutput",
    "ImageTokenPolicyMixin",
    "StrictLoadingMixin",
    "check_context_ids",
    "check_reloaded_state_dict",
    "format_keys",
    "load_state_dict_strict",
    "read_official_state_dict",
    "strict_loading_error",
]
