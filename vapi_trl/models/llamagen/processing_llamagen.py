"""
The LlamaGen processor: dataset rows -> the keyword arguments of `LlamaGenForClassToImage` (`class_labels`) or
`LlamaGenForTextToImage` (`caption_embeds`, `caption_mask`), with the frozen VQ image tokenizer alongside.

T2I captions are encoded by a `T5CaptionEncoder` held as `text_encoder` (saved in `text_encoder/`, its weights by
reference unless it has none to reload from), or read from pre-computed `caption_embeds` rows (`vapi-trl
encode-captions`), right-aligned into the `num_caption_slots` slots as the official `CaptionEmbedder` expects.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..image_tokenizer import ImageTokenizerProcessor
from ..processing_utils import ImageTokenPolicyProcessor, class_label_condition
from .text_encoder import T5CaptionEncoder, pad_caption_features


TEXT_ENCODER_SUBFOLDER = "text_encoder"
_TASKS = ("c2i", "t2i")


class LlamaGenProcessor(ImageTokenPolicyProcessor):
    r"""
    Rows -> LlamaGen condition kwargs: `class_labels` `(B,)` int64 (`task="c2i"`) or `caption_embeds`
    `(B, num_caption_slots, caption_dim)` float32 + `caption_mask` `(B, num_caption_slots)` int64 (`task="t2i"`).

    Example:

    ```python
    from vapi_trl.models import ImageTokenizerProcessor, LlamaGenForClassToImage, LlamaGenProcessor

    policy = LlamaGenForClassToImage.from_pretrained("llamagen-xxl/policy")
    processor = LlamaGenProcessor.from_policy(policy, ImageTokenizerProcessor.from_pretrained("llamagen-xxl/image_tokenizer"))
    ids = policy.sample(**processor.prepare_condition([{"class_label": 207}]), cfg_scale=4.0)
    ```

    Args:
        image_tokenizer ([`ImageTokenizerProcessor`], *optional*):
            The frozen VQ tokenizer; saved in `image_tokenizer/`.
        text_encoder ([`T5CaptionEncoder`], *optional*):
            T2I only: encodes the `prompt` column; saved in `text_encoder/`. Rows with `caption_embeds` need none.
        task (`str`, *optional*, defaults to `"c2i"`):
            `"c2i"` (column `class_label`) or `"t2i"` (column `prompt`), as `LlamaGenConfig.task`.
        num_classes (`int`, *optional*):
            C2I: real classes of the policy (`config.num_classes`); labels outside `[0, num_classes)` raise.
        num_caption_slots (`int`, *optional*):
            T2I: caption slots of the policy (`config.cls_token_num`, 120 officially); the text encoder's
            `max_length` must equal it.
    """

    _subfolder_attributes = ("image_tokenizer", TEXT_ENCODER_SUBFOLDER)
    _optional_subfolders = {TEXT_ENCODER_SUBFOLDER: T5CaptionEncoder}

    def __init__(
        self,
        image_tokenizer: ImageTokenizerProcessor | None = None,
        text_encoder: T5CaptionEncoder | None = None,
        task: str = "c2i",
        num_classes: int | None = None,
        num_caption_slots: int | None = None,
        **kwargs: Any,
    ) -> None:
        if task not in _TASKS:
            raise ValueError(f"`task` must be one of {_TASKS}, got {task!r}.")
        if text_encoder is not None and task != "t2i":
            raise ValueError("A `text_encoder` is for task='t2i' (captions); a C2I processor reads class labels.")
        if text_encoder is not None and not callable(getattr(text_encoder, "encode", None)):
            raise TypeError(
                f"`text_encoder` must be a `T5CaptionEncoder` (e.g. `T5CaptionEncoder.from_text_encoder_pretrained("
                f"'google/flan-t5-xl')`), got {type(text_encoder).__name__}."
            )
        slots = getattr(text_encoder, "max_length", None)
        if slots is not None and num_caption_slots is not None and slots != num_caption_slots:
            raise ValueError(
                f"The text encoder yields {slots} caption slots but the policy has cls_token_num={num_caption_slots}; "
                f"build the encoder with max_length={num_caption_slots}."
            )
        self.text_encoder = text_encoder
        self.task = task
        self.num_classes = num_classes
        self.num_caption_slots = num_caption_slots if num_caption_slots is not None else slots
        super().__init__(image_tokenizer=image_tokenizer, **kwargs)

    @property
    def condition_columns(self) -> tuple[str, ...]:
        """`("class_label",)` for C2I, `("prompt",)` for T2I (rows may carry `caption_embeds` instead)."""
        return ("class_label",) if self.task == "c2i" else ("prompt",)

    @property
    def text_processor(self) -> T5CaptionEncoder | None:
        """The T5 caption encoder (T2I), saved with trainer checkpoints; `None` for C2I."""
        return self.text_encoder

    @classmethod
    def from_policy(
        cls, policy: Any, image_tokenizer: ImageTokenizerProcessor | None = None, text_processor: Any = None
    ) -> LlamaGenProcessor:
        """The processor of a LlamaGen `policy` (task, classes or caption slots from its config); `text_processor`
        is the `T5CaptionEncoder` of a T2I policy (`None` when the rows carry `caption_embeds`)."""
        config = policy.config
        if config.task == "c2i":
            if text_processor is not None:
                raise TypeError(
                    f"LlamaGen C2I is class-conditional and takes no text processor, got "
                    f"{type(text_processor).__name__}; pass `processing_class=None`."
                )
            return cls(image_tokenizer=image_tokenizer, task="c2i", num_classes=config.num_classes)
        return cls(
            image_tokenizer=image_tokenizer,
            text_encoder=text_processor,
            task="t2i",
            num_caption_slots=config.cls_token_num,
        )

    def prepare_condition(
        self, rows: Sequence[dict[str, Any]], device: str | torch.device | None = None
    ) -> dict[str, torch.Tensor]:
        """
        The condition of B rows on `device`. C2I: `class_labels` `(B,)`. T2I: rows with a `caption_embeds` value use
        it (the valid tokens `(L, caption_dim)`, as `vapi-trl encode-captions` writes, or full slots with a
        `caption_mask` column); otherwise the `prompt` captions are encoded by `text_encoder`.

        Raises:
            `ValueError` for a class label out of range, for T2I rows without features and no text encoder.
        """
        if len(rows) == 0:
            raise ValueError("`rows` is empty.")
        if self.task == "c2i":
            condition = class_label_condition(rows, self.num_classes)
        elif rows[0].get("caption_embeds") is not None:
            masks = [row["caption_mask"] for row in rows] if rows[0].get("caption_mask") is not None else None
            embeds, mask = pad_caption_features(
                [row["caption_embeds"] for row in rows], slots=self._slots(), masks=masks
            )
            condition = {"caption_embeds": embeds, "caption_mask": mask}
        else:
            if self.text_encoder is None:
                raise ValueError(
                    "LlamaGenForTextToImage needs caption features: give the processor a `T5CaptionEncoder` as "
                    "`text_encoder` (e.g. `T5CaptionEncoder.from_text_encoder_pretrained('google/flan-t5-xl')`) or "
                    "pass dataset rows with pre-computed `caption_embeds` (`vapi-trl encode-captions`)."
                )
            encoded = self.text_encoder.encode([row["prompt"] for row in rows], device=device)
            condition = {"caption_embeds": encoded["caption_embeds"], "caption_mask": encoded["caption_mask"]}
        return {key: value.to(device) for key, value in condition.items()}

    def _slots(self) -> int:
        if self.num_caption_slots is None:
            raise ValueError(
                "The processor does not know the policy's caption slots: build it with `from_policy(policy)` or "
                "`num_caption_slots=config.cls_token_num`."
            )
        return self.num_caption_slots

    def prepare_policy(self, policy: Any) -> None:
        """Check the image tokenizer, the task and the class count or caption slots against `policy`."""
        super().prepare_policy(policy)
        config = policy.config
        if config.task != self.task:
            raise ValueError(
                f"The processor is for task={self.task!r} but the policy has task={config.task!r}; build it with "
                "`LlamaGenProcessor.from_policy(policy, image_tokenizer)`."
            )
        if self.task == "c2i" and self.num_classes is not None and self.num_classes != config.num_classes:
            raise ValueError(
                f"The processor has num_classes={self.num_classes} but the policy {config.num_classes}; use the "
                "processor saved with this policy, or build it with `from_policy(policy, image_tokenizer)`."
            )
        if self.task == "t2i":
            slots = self.num_caption_slots if self.num_caption_slots is not None else config.cls_token_num
            if slots != config.cls_token_num:
                raise ValueError(
                    f"The text encoder yields {slots} caption slots but the policy has "
                    f"cls_token_num={config.cls_token_num}; build the encoder with max_length={config.cls_token_num}."
                )
            self.num_caption_slots = config.cls_token_num


__all__ = ["LlamaGenProcessor"]
