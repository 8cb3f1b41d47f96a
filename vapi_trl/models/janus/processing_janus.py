"""
Text and image processing for Janus / Janus-Pro text-to-image post-training.

Text side: the DeepSeek SFT prompt with an empty system prompt, `"<|User|>: {caption}\\n\\n<|Assistant|>:"`, preceded
by BOS and followed by `<begin_of_image>` (BOI), left-padded so that BOI is the last column of every row (design notes,
models.md §1). The Janus tokenizer itself is the `processing_class` of the trainer; `JanusProcessor(generation_mode=
"image")` would append BOI and left-pad but applies no template, so the template is applied here.

Image side: the policy's own VQ (`model.model.vqmodel`), copied into an `ImageTokenizerProcessor` with an l2-normalised
codebook (cosine-nearest codes, as the official tokenizer) and the 384² preprocessing (bicubic shortest-edge resize,
center crop, Normalize(0.5, 0.5)). The copy is what the trainer encodes and decodes with; the in-model VQ stays frozen
and is only kept so that `save_pretrained` writes a complete Janus checkpoint.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from typing import Any

import torch
from transformers import JanusConfig, JanusVQVAE, PreTrainedTokenizerBase
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, cached_file

from ..image_tokenizer import ImageTokenizerProcessor
from ..processing_utils import ImageTokenPolicyProcessor

# DeepSeek SFT format with an empty system prompt (official `generation_inference.py`:
# `apply_sft_template_for_multi_turn_prompts(..., system_prompt="")`).
JANUS_PROMPT_TEMPLATE = "<|User|>: {caption}\n\n<|Assistant|>:"
JANUS_BOI_TOKEN = "<begin_of_image>"
# Official `VLChatProcessor.pad_tag`; its id differs between Janus-Pro-1B and -7B, so it is looked up by name.
JANUS_PAD_TOKEN = "<｜▁pad▁｜>"

# Prefix of the VQ weights inside a transformers-format Janus checkpoint.
_VQ_PREFIX = "model.vqmodel."


def format_janus_prompt(caption: str) -> str:
    """The chat-formatted prompt text for one caption (no BOS, no BOI): `"<|User|>: {caption}\\n\\n<|Assistant|>:"`."""
    if not isinstance(caption, str):
        raise TypeError(f"A caption must be a string, got {type(caption).__name__}.")
    return JANUS_PROMPT_TEMPLATE.format(caption=caption.strip())


def get_tokenizer(processing_class: Any) -> PreTrainedTokenizerBase:
    """The text tokenizer of a tokenizer or of a processor holding one (`JanusProcessor`); raises if there is none."""
    tokenizer = getattr(processing_class, "tokenizer", processing_class)
    if not isinstance(tokenizer, PreTrainedTokenizerBase):
        raise TypeError(
            "Janus prompts need the Janus text tokenizer (or a processor holding it) as `processing_class`, e.g. "
            f"`AutoTokenizer.from_pretrained(model_id)`; got {type(processing_class).__name__}."
        )
    return tokenizer


def janus_special_token_ids(processing_class: Any) -> dict[str, int]:
    """
    The ids the Janus prompt format needs, resolved through the tokenizer: `bos_token_id`, `boi_token_id`
    (`<begin_of_image>`) and `pad_token_id` (`<｜▁pad▁｜>` when the vocabulary has it, as the official processor, else
    the tokenizer's pad token).
    """
    tokenizer = get_tokenizer(processing_class)
    vocab = tokenizer.get_vocab()
    boi_token = getattr(tokenizer, "boi_token", None) or JANUS_BOI_TOKEN
    if boi_token not in vocab:
        raise ValueError(
            f"The tokenizer has no {boi_token!r} token: it is not a Janus tokenizer. Load the tokenizer of the Janus "
            "checkpoint (`AutoTokenizer.from_pretrained(model_id)`)."
        )
    pad_token_id = vocab.get(JANUS_PAD_TOKEN, tokenizer.pad_token_id)
    if tokenizer.bos_token_id is None or pad_token_id is None:
        raise ValueError(
            f"The tokenizer needs a BOS and a pad token (got bos_token_id={tokenizer.bos_token_id}, "
            f"pad_token_id={pad_token_id})."
        )
    return {"bos_token_id": tokenizer.bos_token_id, "boi_token_id": vocab[boi_token], "pad_token_id": pad_token_id}


def tokenize_janus_prompts(captions: Sequence[str], processing_class: Any) -> dict[str, torch.Tensor]:
    """
    Captions -> left-padded Janus image-generation prompts.

    Each row is `[BOS] + tokens("<|User|>: {caption}\\n\\n<|Assistant|>:") + [BOI]`, the ids the official inference
    gets from `tokenizer.encode(sft_format + "<begin_of_image>")`; BOI is a special token, so appending its id equals
    tokenizing it with the text.

    Args:
        captions (`Sequence[str]`): B captions.
        processing_class: the Janus tokenizer or a processor holding it.

    Returns:
        `dict` with `prompt_ids` `(B, P)` int64 and `prompt_mask` `(B, P)` int64 in {0, 1}, left-padded with the pad
        id:
        `prompt_ids[:, -1]` is BOI and `prompt_mask[:, -1]` is 1 for every row.
    """
    if isinstance(captions, str):
        raise TypeError("`captions` must be a sequence of strings, not a single string.")
    if len(captions) == 0:
        raise ValueError("`captions` is empty.")
    tokenizer = get_tokenizer(processing_class)
    ids = janus_special_token_ids(tokenizer)
    rows = []
    for caption in captions:
        text_ids = tokenizer(format_janus_prompt(caption), add_special_tokens=False)["input_ids"]
        rows.append([ids["bos_token_id"], *text_ids, ids["boi_token_id"]])
    length = max(len(row) for row in rows)
    prompt_ids = torch.full((len(rows), length), ids["pad_token_id"], dtype=torch.long)
    prompt_mask = torch.zeros((len(rows), length), dtype=torch.long)
    for index, row in enumerate(rows):
        prompt_ids[index, length - len(row) :] = torch.tensor(row, dtype=torch.long)
        prompt_mask[index, length - len(row) :] = 1
    return {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask}


def janus_image_tokenizer_from_model(model: Any, image_size: int | None = None) -> ImageTokenizerProcessor:
    """
    An `ImageTokenizerProcessor` over a deep copy of a Janus model's VQ (`model.model.vqmodel`), with the codebook
    l2-normalised (ids equal the official tokenizer's) and the VQ preprocessing at `image_size` (default: the VQ grid
    times its downsampling, 384 for Janus-Pro). The model's own VQ is left untouched.

    Args:
        model: a `JanusForConditionalGeneration` (or subclass, possibly PEFT-wrapped).
        image_size (`int`, *optional*): pixels per side; must equal `num_patches * 16` for Janus-Pro.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    vq_model = getattr(getattr(base, "model", None), "vqmodel", None)
    if not isinstance(vq_model, JanusVQVAE):
        raise TypeError(f"Expected a Janus model with `model.vqmodel`, got {type(model).__name__}.")
    vq_copy = copy.deepcopy(vq_model).to(torch.float32)
    return ImageTokenizerProcessor.from_vq_model(vq_copy, image_size=image_size)


def janus_image_tokenizer_from_pretrained(
    pretrained_model_name_or_path: str | os.PathLike, image_size: int | None = None, **hub_kwargs: Any
) -> ImageTokenizerProcessor:
    """
    Build the image tokenizer from a transformers-format Janus checkpoint (local dir or Hub id) without loading the
    language model: reads `config.json` and only the `model.vqmodel.*` tensors from the safetensors file(s), loads them
    strictly into a `JanusVQVAE` and wraps it as in `janus_image_tokenizer_from_model`.

    Args:
        pretrained_model_name_or_path: directory or Hub id of a checkpoint saved by `JanusForConditionalGeneration`.
        image_size (`int`, *optional*): pixels per side, default `num_patches * downsampling`.
        hub_kwargs: `revision`, `cache_dir`, `token`, `local_files_only`, ... as for `from_pretrained`.
    """
    from safetensors import safe_open

    config = JanusConfig.from_pretrained(pretrained_model_name_or_path, **hub_kwargs)
    index_file = cached_file(
        pretrained_model_name_or_path, SAFE_WEIGHTS_INDEX_NAME, _raise_exceptions_for_missing_entries=False,
        **hub_kwargs,
    )  # fmt: skip
    if index_file is not None:
        with open(index_file) as handle:
            weight_map = json.load(handle)["weight_map"]
        shards = sorted({shard for key, shard in weight_map.items() if key.startswith(_VQ_PREFIX)})
    else:
        shards = [SAFE_WEIGHTS_NAME]
    state_dict = {}
    for shard in shards:
        path = cached_file(pretrained_model_name_or_path, shard, **hub_kwargs)
        with safe_open(path, framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 - safe_open handles are not iterable
                if key.startswith(_VQ_PREFIX):
                    state_dict[key[len(_VQ_PREFIX) :]] = handle.get_tensor(key)
    if not state_dict:
        raise ValueError(
            f"No `{_VQ_PREFIX}*` tensors in '{pretrained_model_name_or_path}': not a transformers-format Janus "
            "checkpoint (convert official DeepSeek weights with transformers' `convert_janus_weights_to_hf.py`)."
        )
    vq_model = JanusVQVAE(config.vq_config)
    vq_model.load_state_dict(state_dict, strict=True)
    return ImageTokenizerProcessor.from_vq_model(vq_model.to(torch.float32), image_size=image_size)


class JanusImageGenerationProcessor(ImageTokenPolicyProcessor):
    r"""
    Rows with a `prompt` column -> the `JanusForImageGeneration` condition: `prompt_ids` and `prompt_mask`, each
    `(B, P)` int64, left-padded, BOS first and `<begin_of_image>` last (`tokenize_janus_prompts`). Holds the Janus
    text tokenizer (saved at the top level, as transformers' `JanusProcessor`) and the image tokenizer (the policy's
    VQ with an l2-normalised codebook, `janus_image_tokenizer_from_model`; saved in `image_tokenizer/`).

    The special ids (BOS, BOI, pad) are resolved once, here; `prepare_policy` records them in the policy's
    `generation_config`, where its unconditional prompt and image-mode `generate` read them.

    Not registered with `AutoProcessor`: the native `JanusConfig` maps to transformers' `JanusProcessor`, which
    would be displaced for every Janus checkpoint. Load it with `JanusImageGenerationProcessor.from_pretrained`.

    Example:

    ```python
    from transformers import AutoTokenizer
    from vapi_trl.models import JanusForImageGeneration, JanusImageGenerationProcessor, janus_image_tokenizer_from_model

    policy = JanusForImageGeneration.from_pretrained("deepseek-community/Janus-Pro-1B")
    tokenizer = AutoTokenizer.from_pretrained("deepseek-community/Janus-Pro-1B")
    processor = JanusImageGenerationProcessor(tokenizer, image_tokenizer=janus_image_tokenizer_from_model(policy))
    processor.prepare_policy(policy)
    ids = policy.sample(**processor.prepare_condition([{"prompt": "a red apple on a table"}]), cfg_scale=5.0)
    ```

    Args:
        tokenizer (`PreTrainedTokenizerBase`): the Janus text tokenizer (`AutoTokenizer.from_pretrained(model_id)`).
        image_tokenizer ([`ImageTokenizerProcessor`], *optional*): the frozen VQ tokenizer.
    """

    condition_columns: tuple[str, ...] = ("prompt",)

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, image_tokenizer: ImageTokenizerProcessor | None = None, **kwargs: Any
    ) -> None:
        self.special_token_ids = janus_special_token_ids(get_tokenizer(tokenizer))
        super().__init__(tokenizer, image_tokenizer=image_tokenizer, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        # Derived from the tokenizer on load; not a setting.
        ids = self.__dict__.pop("special_token_ids")
        try:
            return super().to_dict()
        finally:
            self.special_token_ids = ids

    @property
    def text_processor(self) -> PreTrainedTokenizerBase:
        """The Janus text tokenizer, saved with trainer checkpoints."""
        return self.tokenizer

    @classmethod
    def from_policy(
        cls, policy: Any, image_tokenizer: ImageTokenizerProcessor | None = None, text_processor: Any = None
    ) -> JanusImageGenerationProcessor:
        """The processor of a Janus `policy` from the Janus tokenizer (or a processor holding it, e.g. transformers'
        `JanusProcessor`) as `text_processor`."""
        if text_processor is None:
            raise ValueError(
                "JanusForImageGeneration needs the Janus tokenizer to build prompts: pass it as `processing_class` "
                "to VAPiTrainer (e.g. `AutoTokenizer.from_pretrained(model_id)`)."
            )
        return cls(get_tokenizer(text_processor), image_tokenizer=image_tokenizer)

    def prepare_condition(
        self, rows: Sequence[dict[str, Any]], device: str | torch.device | None = None
    ) -> dict[str, torch.Tensor]:
        """`prompt_ids` and `prompt_mask` `(B, P)` int64 on `device` for the `prompt` captions of B rows."""
        condition = tokenize_janus_prompts([row["prompt"] for row in rows], self.tokenizer)
        return {key: value.to(device) for key, value in condition.items()}

    def prepare_policy(self, policy: Any) -> None:
        """Check the image tokenizer and record BOS, BOI and pad ids in `policy.generation_config`, once."""
        super().prepare_policy(policy)
        policy.set_special_token_ids(self.tokenizer)


__all__ = [
    "JANUS_BOI_TOKEN",
    "JANUS_PAD_TOKEN",
    "JANUS_PROMPT_TEMPLATE",
    "JanusImageGenerationProcessor",
    "format_janus_prompt",
    "get_tokenizer",
    "janus_image_tokenizer_from_model",
    "janus_image_tokenizer_from_pretrained",
    "janus_special_token_ids",
    "tokenize_janus_prompts",
]
