"""
The processors of the policy families: dataset rows -> the policy's condition keyword arguments (tensors), with the
frozen image tokenizer alongside (`processor.image_tokenizer`: images -> ids, `batch_decode`).

`ImageTokenPolicyProcessor` is the base, a transformers `ProcessorMixin`: `save_pretrained` writes
`processor_config.json` (the family's metadata and `processor_class`), the text sub-processor of the family (the
Janus tokenizer) at the top level, and the image tokenizer in `image_tokenizer/`; `from_pretrained` (and
`AutoProcessor.from_pretrained`, where the family is registered) reads them back offline. A folder saved by
`ImageTokenizerProcessor.save_pretrained` alone (the layout before the family processors, `processor_config.json` +
`vq_model/`) still loads, with a `FutureWarning`, until vapi-trl 0.3.

The family processors:
- `LlamaGenProcessor` (`LlamaGenConfig`): `class_labels` (C2I) or T5 `caption_embeds` + `caption_mask` (T2I);
- `VARProcessor` (`VARConfig`): `class_labels`;
- `JanusImageGenerationProcessor`: left-padded chat prompts `prompt_ids` + `prompt_mask`.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from transformers import BatchFeature
from transformers.processing_utils import ProcessorMixin
from transformers.utils import PROCESSOR_NAME, cached_file

from .image_tokenizer import ImageTokenizerProcessor
from .image_tokenizer.processing_image_tokenizer import VQ_MODEL_SUBFOLDER
from .modeling_utils import class_label_value


IMAGE_TOKENIZER_SUBFOLDER = "image_tokenizer"

# `from_pretrained` arguments that locate files; forwarded to the image tokenizer's `from_pretrained`.
_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "proxies")


def class_label_condition(rows: Sequence[dict[str, Any]], num_classes: int | None) -> dict[str, torch.Tensor]:
    """
    The condition of class-conditional rows (column `class_label`): `class_labels` `(batch_size,)` int64.

    Args:
        rows: B dataset rows; each `class_label` is an int or a whole-number float/numpy scalar.
        num_classes (`int`, *optional*): real classes of the policy; labels must lie in `[0, num_classes)`.

    Raises:
        `ValueError` naming the label and the valid range for a label outside it.
    """
    labels = torch.tensor([class_label_value(row["class_label"]) for row in rows], dtype=torch.long)
    out_of_range = labels < 0 if num_classes is None else (labels < 0) | (labels >= num_classes)
    if out_of_range.any():
        raise ValueError(
            f"class_label {labels[out_of_range][0].item()} is outside the policy's class range [0, {num_classes}); "
            "remap the dataset's labels or use a policy trained on these classes."
        )
    return {"class_labels": labels}


def _is_legacy_image_tokenizer_folder(path: str | os.PathLike, hub_kwargs: dict[str, Any]) -> bool:
    """Whether `path` is an image-tokenizer folder of the layout before the family processors: its
    `processor_config.json` names an image tokenizer class and there is no `image_tokenizer/` subfolder."""
    config_file = cached_file(path, PROCESSOR_NAME, _raise_exceptions_for_missing_entries=False, **hub_kwargs)
    if config_file is None:
        return False
    with open(config_file, encoding="utf-8") as handle:
        processor_class = json.load(handle).get("processor_class", "")
    return processor_class.endswith("ImageTokenizerProcessor")


class ImageTokenPolicyProcessor(ProcessorMixin):
    r"""
    Base of the family processors: dataset rows -> the policy's condition kwargs, and the frozen image tokenizer.

    A subclass sets `condition_columns`, `image_tokenizer_class` and implements `prepare_condition`; it may override
    `from_policy` (build from a policy and the pre-0.2 trainer arguments) and `prepare_policy` (checks, and what the
    policy reads once from the processor).

    Args:
        image_tokenizer ([`~vapi_trl.models.ImageTokenizerProcessor`], *optional*):
            The frozen VQ tokenizer (`preprocess`, `encode`, `decode`, `batch_decode`); saved in `image_tokenizer/`.
            Without it the processor prepares conditions only.
    """

    # Dataset columns holding the condition (the policy's `condition_columns`).
    condition_columns: tuple[str, ...] = ()
    # The class `from_pretrained` loads `image_tokenizer/` with.
    image_tokenizer_class: type = ImageTokenizerProcessor
    # Objects held as plain attributes and saved in their own subfolder (not in `processor_config.json`).
    _subfolder_attributes: tuple[str, ...] = ("image_tokenizer",)
    # The held objects besides the image tokenizer that `from_pretrained` loads when their subfolder was saved.
    _optional_subfolders: dict[str, type] = {}

    def __init__(self, *args: Any, image_tokenizer: ImageTokenizerProcessor | None = None, **kwargs: Any) -> None:
        if image_tokenizer is not None and not callable(getattr(image_tokenizer, "encode", None)):
            raise TypeError(
                f"`image_tokenizer` must be an image tokenizer such as `{self.image_tokenizer_class.__name__}` "
                f"(`preprocess`, `encode`, `decode`), got {type(image_tokenizer).__name__}."
            )
        self.image_tokenizer = image_tokenizer
        super().__init__(*args, **kwargs)

    @classmethod
    def get_attributes(cls) -> list[str]:
        # `image_tokenizer` contains "tokenizer", which `ProcessorMixin` would take for a text tokenizer.
        return [name for name in super().get_attributes() if name not in cls._subfolder_attributes]

    # ------------------------------------------------------------------ the interface the trainer uses

    @classmethod
    def from_policy(
        cls, policy: Any, image_tokenizer: Any = None, text_processor: Any = None
    ) -> ImageTokenPolicyProcessor:
        """The processor of `policy` from its config, the image tokenizer and the family's text processor (the
        arguments `VAPiTrainer` took before the family processors); see the subclasses."""
        raise NotImplementedError(f"{cls.__name__} does not implement `from_policy`.")

    @property
    def text_processor(self) -> Any:
        """The text tokenizer/encoder of the family (saved with trainer checkpoints), or `None`."""
        return None

    def prepare_condition(
        self, rows: Sequence[dict[str, Any]], device: str | torch.device | None = None
    ) -> dict[str, torch.Tensor]:
        """The policy's condition kwargs for B dataset rows, each a tensor `(B, ...)` on `device`."""
        raise NotImplementedError(f"{type(self).__name__} does not implement `prepare_condition`.")

    def prepare_policy(self, policy: Any) -> None:
        """
        Check that `policy` matches this processor (image codebook and tokens per image) and record on it what its
        forward reads from the processor; called once, by `VAPiTrainer` at construction.

        Raises:
            `ValueError` naming both values when the image tokenizer does not fit the policy.
        """
        if self.image_tokenizer is not None:
            self.image_tokenizer.check_compatible(policy.codebook_size, policy.num_image_tokens)

    def __call__(
        self,
        rows: Sequence[dict[str, Any]] | None = None,
        images: Any = None,
        device: str | torch.device | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """
        `rows` -> the condition kwargs (`prepare_condition`); `images` -> the image tokenizer's `pixel_values`
        `(B, 3, H, W)` and `input_ids` `(B, N)`. Both may be given; returns one `BatchFeature`.
        """
        if rows is None and images is None:
            raise ValueError("Pass `rows` (dataset rows with the condition columns), `images`, or both.")
        data: dict[str, Any] = {}
        if rows is not None:
            data.update(self.prepare_condition(rows, device=device))
        if images is not None:
            if self.image_tokenizer is None:
                raise ValueError(f"This {type(self).__name__} has no image tokenizer; build it with one.")
            data.update(self.image_tokenizer(images, **kwargs))
        return BatchFeature(data=data)

    # ------------------------------------------------------------------ serialization

    def to_dict(self) -> dict[str, Any]:
        # `ProcessorMixin.to_dict` deep-copies every instance attribute; the subfolder objects are saved separately.
        held = {name: self.__dict__.pop(name, None) for name in self._subfolder_attributes}
        try:
            return super().to_dict()
        finally:
            self.__dict__.update(held)

    def save_pretrained(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs: Any) -> list:
        """Save `processor_config.json`, the text sub-processor and each held object in its subfolder
        (`image_tokenizer/`, ...)."""
        if push_to_hub:
            raise ValueError("Push the folder with `huggingface_hub.upload_folder` after `save_pretrained`.")
        files = super().save_pretrained(save_directory, **kwargs)
        for name in self._subfolder_attributes:
            held = getattr(self, name, None)
            if held is not None:
                path = os.path.join(save_directory, name)
                held.save_pretrained(path)
                files.append(path)
        return files

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        image_tokenizer: ImageTokenizerProcessor | None = None,
        load_image_tokenizer: bool = True,
        **kwargs: Any,
    ) -> ImageTokenPolicyProcessor:
        """
        Load a folder written by `save_pretrained` (local or Hub): metadata, text sub-processor, `image_tokenizer/`
        and the family's other held objects (`_optional_subfolders`, e.g. LlamaGen's `text_encoder/`, when saved).
        Pass `image_tokenizer` (or another held object by name) to use a loaded one, or `load_image_tokenizer=False`
        for a condition-only processor. A bare image-tokenizer folder (`processor_config.json` + `vq_model/`, the
        layout before vapi-trl 0.2) loads as the image tokenizer, with the family metadata at its defaults, and warns.
        """
        hub_kwargs = {key: kwargs[key] for key in _HUB_KWARGS if key in kwargs}
        held = {name: kwargs.pop(name) for name in cls._optional_subfolders if name in kwargs}
        legacy = _is_legacy_image_tokenizer_folder(pretrained_model_name_or_path, hub_kwargs)
        if image_tokenizer is None and load_image_tokenizer:
            subfolder = {} if legacy else {"subfolder": IMAGE_TOKENIZER_SUBFOLDER}
            image_tokenizer = cls.image_tokenizer_class.from_pretrained(
                pretrained_model_name_or_path, **subfolder, **hub_kwargs
            )
        if legacy:
            warnings.warn(
                f"'{pretrained_model_name_or_path}' is an image-tokenizer folder (`processor_config.json` + "
                f"`{VQ_MODEL_SUBFOLDER}/`), the layout before the family processors; loading it into {cls.__name__} "
                "is kept until vapi-trl 0.3. Re-save it with `processor.save_pretrained(path)`.",
                FutureWarning,
                stacklevel=2,
            )
            return cls._from_legacy_image_tokenizer(image_tokenizer)
        processor = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        processor.image_tokenizer = image_tokenizer
        for name, held_class in cls._optional_subfolders.items():
            local = os.path.join(os.fspath(pretrained_model_name_or_path), name)
            if held.get(name) is None and os.path.isdir(local):
                held[name] = held_class.from_pretrained(local)
            setattr(processor, name, held.get(name))
        return processor

    @classmethod
    def _from_legacy_image_tokenizer(cls, image_tokenizer: Any) -> ImageTokenPolicyProcessor:
        """The processor around an image tokenizer loaded from the pre-0.2 layout (metadata at its defaults)."""
        return cls(image_tokenizer=image_tokenizer)


class ClassLabelProcessor(ImageTokenPolicyProcessor):
    r"""
    Processor of a class-conditional policy (LlamaGen C2I, VAR): rows with a `class_label` column ->
    `class_labels` `(batch_size,)` int64.

    Args:
        image_tokenizer (*optional*): the frozen VQ tokenizer, saved in `image_tokenizer/`.
        num_classes (`int`, *optional*): real classes of the policy (`config.num_classes`); labels outside
            `[0, num_classes)` are refused. Unchecked above 0 when unset.
    """

    condition_columns: tuple[str, ...] = ("class_label",)

    def __init__(
        self, image_tokenizer: ImageTokenizerProcessor | None = None, num_classes: int | None = None, **kwargs: Any
    ) -> None:
        if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
            raise ValueError(f"`num_classes` must be a positive int, got {num_classes!r}.")
        self.num_classes = num_classes
        super().__init__(image_tokenizer=image_tokenizer, **kwargs)

    @classmethod
    def from_policy(cls, policy: Any, image_tokenizer: Any = None, text_processor: Any = None) -> ClassLabelProcessor:
        """The processor of a class-conditional `policy` (`num_classes` from its config); no text processor."""
        if text_processor is not None:
            raise TypeError(
                f"{type(policy).__name__} is class-conditional and takes no text processor, got "
                f"{type(text_processor).__name__}; pass `processing_class=None`."
            )
        return cls(image_tokenizer=image_tokenizer, num_classes=policy.config.num_classes)

    def prepare_condition(
        self, rows: Sequence[dict[str, Any]], device: str | torch.device | None = None
    ) -> dict[str, torch.Tensor]:
        """`class_labels` `(B,)` int64 on `device` for B rows; raises a `ValueError` for a label out of range."""
        return {key: value.to(device) for key, value in class_label_condition(rows, self.num_classes).items()}

    def prepare_policy(self, policy: Any) -> None:
        """Check the image tokenizer and the class count against `policy`."""
        super().prepare_policy(policy)
        if self.num_classes is not None and self.num_classes != policy.config.num_classes:
            raise ValueError(
                f"The processor has num_classes={self.num_classes} but the policy {policy.config.num_classes}; use "
                "the processor saved with this policy, or build it with `from_policy(policy, image_tokenizer)`."
            )


def processor_for_policy(policy: Any, processing_class: Any = None, image_tokenizer: Any = None) -> Any:
    """
    The family processor that prepares `policy`'s inputs: `processing_class` itself when it is one (with
    `image_tokenizer` attached if it has none), else `policy.processor_class.from_policy(policy, image_tokenizer,
    processing_class)` (the pre-0.2 arguments: the image tokenizer and the text tokenizer/encoder).

    Raises:
        `TypeError` when `policy` declares no `processor_class` and `processing_class` is not a processor;
        `ValueError` when two different image tokenizers are given.
    """
    if isinstance(processing_class, ImageTokenPolicyProcessor):
        if image_tokenizer is not None:
            if (
                processing_class.image_tokenizer is not None
                and processing_class.image_tokenizer is not image_tokenizer
            ):
                raise ValueError(
                    "Two image tokenizers were given: `image_tokenizer` and `processing_class.image_tokenizer`. Pass "
                    "only the processor (it holds the image tokenizer)."
                )
            processing_class.image_tokenizer = image_tokenizer
        return processing_class
    processor_class = getattr(policy, "processor_class", None)
    if processor_class is None:
        raise TypeError(
            f"{type(policy).__name__} declares no `processor_class`: pass its processor (an "
            "`ImageTokenPolicyProcessor` subclass turning dataset rows into the policy's condition) as "
            "`processing_class`."
        )
    return processor_class.from_policy(policy, image_tokenizer=image_tokenizer, text_processor=processing_class)


__all__ = [
    "IMAGE_TOKENIZER_SUBFOLDER",
    "ClassLabelProcessor",
    "ImageTokenPolicyProcessor",
    "class_label_condition",
    "processor_for_policy",
]
