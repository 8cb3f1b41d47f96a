"""
Frozen T5 caption encoder of LlamaGen text-to-image: captions -> 120 right-aligned feature slots.

Official LlamaGen (`language/t5.py`, `autoregressive/sample/sample_t2i.py`) encodes each caption with flan-T5-XL:
text cleaning (`clean_caption`, twice), tokenization to `max_length=120` (right padding, truncation, EOS appended),
`T5EncoderModel(...).last_hidden_state` `[B, 120, 2048]` in bf16, then moves the valid tokens to the END of the 120
slots ("left padding": `new_emb = cat(emb[n:], emb[:n])`, `mask = flip(mask)`) and zeroes the padded slots
(`emb * mask`). `T5CaptionEncoder` reproduces that and returns `caption_embeds` / `caption_mask`, the condition of
`LlamaGenForTextToImage`.

The encoder is frozen and never part of the policy: it is the trainer's `processing_class` (a `ProcessorMixin`, so TRL
accepts it and saves it with checkpoints), or its features are pre-computed once per dataset (`vapi-trl
encode-captions`). `save_pretrained` writes the tokenizer and `caption_encoder` settings; the T5 weights (≈1.2B
parameters for flan-T5-XL) are only written (`text_encoder/`) when `save_text_encoder=True` or when the encoder has no
`text_encoder_name_or_path` to reload from, so training checkpoints stay small.
"""

from __future__ import annotations

import html
import os
import re
import urllib.parse
from collections.abc import Sequence
from typing import Any

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase, T5EncoderModel
from transformers.processing_utils import ProcessorMixin

TEXT_ENCODER_SUBFOLDER = "text_encoder"
DEFAULT_TEXT_ENCODER = "google/flan-t5-xl"
DEFAULT_CAPTION_SLOTS = 120
TEXT_PREPROCESSING_MODES = ("clean", "lower", "none")

# `from_pretrained` arguments that locate files; forwarded to the tokenizer and T5 loads.
_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "proxies")

_BAD_PUNCT = re.compile(r"[" + "#®•©™&@·º½¾¿¡§~" + r"\)\(\]\[\}\{\|\\/\*" + r"]{1,}")
_DASHES = re.compile(
    r"[\u002D\u058A\u05BE\u1400\u1806\u2010-\u2015\u2E17\u2E1A\u2E3A\u2E3B\u2E40\u301C\u3030\u30A0\uFE31\uFE32"
    r"\uFE58\uFE63\uFF0D]+"
)
_URL_1 = re.compile(
    r"\b((?:https?:(?:\/{1,3}|[a-zA-Z0-9%])|[a-zA-Z0-9.\-]+[.](?:com|co|ru|net|org|edu|gov|it)[\w/-]*\b\/?(?!@)))"
)
_URL_2 = re.compile(
    r"\b((?:www:(?:\/{1,3}|[a-zA-Z0-9%])|[a-zA-Z0-9.\-]+[.](?:com|co|ru|net|org|edu|gov|it)[\w/-]*\b\/?(?!@)))"
)


def _strip_html(text: str) -> str:
    try:
        from bs4 import BeautifulSoup
    except ImportError:  # bs4 is optional: drop tags with a regex (same result on plain captions)
        return re.sub(r"<[^>]*>", "", text)
    return BeautifulSoup(text, features="html.parser").text


def _basic_clean(text: str) -> str:
    try:
        import ftfy

        text = ftfy.fix_text(text)
    except ImportError:  # ftfy is optional: it only repairs mojibake, which clean captions do not have
        pass
    return html.unescape(html.unescape(text)).strip()


def clean_caption(caption: str) -> str:
    """
    Official LlamaGen/PixArt caption cleaning (`T5Embedder.clean_caption`, applied twice by `text_preprocessing`):
    lowercase, strip URLs, HTML, @handles, CJK blocks, ids, file names and odd punctuation, normalise dashes and
    quotes.
    `ftfy` and `bs4` are used when installed; without them mojibake is not repaired and HTML tags are removed by a
    regex, which changes nothing for plain captions such as the GenEval prompts.
    """
    caption = urllib.parse.unquote_plus(str(caption)).strip().lower()
    caption = re.sub("<person>", "person", caption)
    caption = _URL_1.sub("", caption)
    caption = _URL_2.sub("", caption)
    caption = _strip_html(caption)
    caption = re.sub(r"@[\w\d]+\b", "", caption)
    for block in (r"[\u31c0-\u31ef]+", r"[\u31f0-\u31ff]+", r"[\u3200-\u32ff]+", r"[\u3300-\u33ff]+",
                  r"[\u3400-\u4dbf]+", r"[\u4dc0-\u4dff]+", r"[\u4e00-\u9fff]+"):  # fmt: skip
        caption = re.sub(block, "", caption)
    caption = _DASHES.sub("-", caption)
    caption = re.sub(r"[`´«»“”¨]", '"', caption)
    caption = re.sub(r"[‘’]", "'", caption)
    caption = re.sub(r"&quot;?", "", caption)
    caption = re.sub(r"&amp", "", caption)
    caption = re.sub(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}", " ", caption)
    caption = re.sub(r"\d:\d\d\s+$", "", caption)
    caption = re.sub(r"\\n", " ", caption)
    caption = re.sub(r"#\d{1,3}\b", "", caption)
    caption = re.sub(r"#\d{5,}\b", "", caption)
    caption = re.sub(r"\b\d{6,}\b", "", caption)
    caption = re.sub(r"[\S]+\.(?:png|jpg|jpeg|bmp|webp|eps|pdf|apk|mp4)", "", caption)
    caption = re.sub(r"[\"\']{2,}", r'"', caption)
    caption = re.sub(r"[\.]{2,}", r" ", caption)
    caption = _BAD_PUNCT.sub(" ", caption)
    caption = re.sub(r"\s+\.\s+", r" ", caption)
    if len(re.findall(r"(?:\-|\_)", caption)) > 3:
        caption = re.sub(r"(?:\-|\_)", " ", caption)
    caption = _basic_clean(caption)
    caption = re.sub(r"\b[a-zA-Z]{1,3}\d{3,15}\b", "", caption)
    caption = re.sub(r"\b[a-zA-Z]+\d+[a-zA-Z]+\b", "", caption)
    caption = re.sub(r"\b\d+[a-zA-Z]+\d+\b", "", caption)
    caption = re.sub(r"(worldwide\s+)?(free\s+)?shipping", "", caption)
    caption = re.sub(r"(free\s)?download(\sfree)?", "", caption)
    caption = re.sub(r"\bclick\b\s(?:for|on)\s\w+", "", caption)
    caption = re.sub(r"\b(?:png|jpg|jpeg|bmp|webp|eps|pdf|apk|mp4)(\simage[s]?)?", "", caption)
    caption = re.sub(r"\bpage\s+\d+\b", "", caption)
    caption = re.sub(r"\b\d*[a-zA-Z]+\d+[a-zA-Z]+\d+[a-zA-Z\d]*\b", r" ", caption)
    caption = re.sub(r"\b\d+\.?\d*[xх×]\d+\.?\d*\b", "", caption)
    caption = re.sub(r"\b\s+\:\s+", r": ", caption)
    caption = re.sub(r"(\D[,\./])\b", r"\1 ", caption)
    caption = re.sub(r"\s+", " ", caption)
    caption = re.sub(r"^[\"\']([\w\W]+)[\"\']$", r"\1", caption)
    caption = re.sub(r"^[\'\_,\-\:;]", r"", caption)
    caption = re.sub(r"[\'\_,\-\:\-\+]$", r"", caption)
    caption = re.sub(r"^\.\S+$", "", caption)
    return caption.strip()


def preprocess_caption(caption: str, mode: str = "clean") -> str:
    """Text preprocessing before tokenization: `"clean"` (official default, `clean_caption` twice), `"lower"`
    (`lower().strip()`, the official `use_text_preprocessing=False` branch) or `"none"`."""
    if not isinstance(caption, str):
        raise TypeError(f"A caption must be a string, got {type(caption).__name__}.")
    if mode == "clean":
        return clean_caption(clean_caption(caption))
    if mode == "lower":
        return caption.lower().strip()
    if mode == "none":
        return caption
    raise ValueError(f"text_preprocessing must be one of {TEXT_PREPROCESSING_MODES}, got {mode!r}.")


def right_align_captions(embeddings: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """
    Move the valid tokens of right-padded caption features to the end of the slots and zero the padding (official
    "left padding": `cat(emb[n:], emb[:n])`, `flip(mask)`, `emb * mask`).

    Args:
        embeddings (`torch.Tensor` of shape `(batch_size, slots, dim)`): encoder features, valid tokens first.
        mask (`torch.Tensor` of shape `(batch_size, slots)`): 1 for the first `n_b` slots of row `b`, then 0.

    Returns:
        `(caption_embeds, caption_mask)`: `(batch_size, slots, dim)` with row `b`'s tokens in the last `n_b` slots and
        zeros before them, and the matching `(batch_size, slots)` int64 mask.
    """
    if embeddings.dim() != 3 or mask.shape != embeddings.shape[:2]:
        raise ValueError(
            f"`embeddings` must be (batch_size, slots, dim) and `mask` (batch_size, slots); got "
            f"{tuple(embeddings.shape)} and {tuple(mask.shape)}."
        )
    slots = mask.shape[1]
    lengths = mask.long().sum(dim=1)
    expected = torch.arange(slots, device=mask.device)[None, :] < lengths[:, None]
    if not torch.equal(mask.bool(), expected):
        raise ValueError("`mask` must be right-padded (ones first, then zeros), as from a right-padding tokenizer.")
    # new[j] = old[(j + n) % slots]: the official `cat(old[n:], old[:n])`.
    index = (torch.arange(slots, device=mask.device)[None, :] + lengths[:, None]) % slots
    aligned = embeddings.gather(1, index[:, :, None].expand(-1, -1, embeddings.shape[-1]))
    aligned_mask = mask.long().flip(-1)
    return aligned * aligned_mask[:, :, None].to(aligned.dtype), aligned_mask


def pad_caption_features(
    features: Sequence[Any], slots: int = DEFAULT_CAPTION_SLOTS, masks: Sequence[Any] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    Stack per-caption features into right-aligned slots (dataset rows -> `LlamaGenForTextToImage` inputs).

    Args:
        features: B arrays (lists, numpy or tensors). Either the valid tokens only, `(L_b, dim)` with `L_b <= slots`
            (the compact layout `vapi-trl encode-captions` writes, as official `.npy` files), or full `(slots, dim)`
            slots when `masks` is given.
        slots (`int`, *optional*, defaults to 120): number of caption slots (`config.cls_token_num`).
        masks: B `(slots,)` masks of full-width features, already right-aligned.

    Returns:
        `caption_embeds` `(B, slots, dim)` float32 (zeros in padded slots) and `caption_mask` `(B, slots)` int64.
    """
    tensors = [torch.as_tensor(feature, dtype=torch.float32) for feature in features]
    if not tensors:
        raise ValueError("No caption features given.")
    dims = {tensor.shape[-1] if tensor.dim() == 2 else None for tensor in tensors}
    if None in dims or len(dims) != 1:
        shapes = [tuple(tensor.shape) for tensor in tensors]
        raise ValueError(f"Caption features must be 2D (tokens, dim) with one common dim, got shapes {shapes}.")
    dim = dims.pop()
    embeds = torch.zeros(len(tensors), slots, dim)
    mask = torch.zeros(len(tensors), slots, dtype=torch.long)
    for index, tensor in enumerate(tensors):
        if masks is not None:
            row_mask = torch.as_tensor(masks[index]).long()
            if tensor.shape[0] != slots or row_mask.shape != (slots,):
                raise ValueError(
                    f"With `caption_mask`, `caption_embeds` must be ({slots}, {dim}) and the mask ({slots},); got "
                    f"{tuple(tensor.shape)} and {tuple(row_mask.shape)}."
                )
            embeds[index] = tensor * row_mask[:, None]
            mask[index] = row_mask
            continue
        length = tensor.shape[0]
        if not 1 <= length <= slots:
            raise ValueError(
                f"Compact caption features must have 1 to {slots} tokens, got {length}; re-encode the captions with "
                f"max_length={slots}."
            )
        embeds[index, slots - length :] = tensor
        mask[index, slots - length :] = 1
    return embeds, mask


class T5CaptionEncoder(ProcessorMixin):
    r"""
    Frozen T5 text encoder + tokenizer producing LlamaGen T2I caption slots.

    Args:
        tokenizer (`PreTrainedTokenizerBase`):
            The T5 tokenizer (flan-T5-XL's `T5TokenizerFast`); padding to the right, EOS appended.
        text_encoder (`T5EncoderModel`, *optional*):
            The encoder; kept frozen in eval mode. Without it only tokenization works.
        max_length (`int`, *optional*, defaults to 120):
            Caption slots (official `t5_feature_max_len`); must equal the policy's `config.cls_token_num`.
        text_encoder_name_or_path (`str`, *optional*):
            Where the encoder weights can be reloaded from (Hub id or folder); recorded by `save_pretrained`.
        text_preprocessing (`str`, *optional*, defaults to `"clean"`):
            `"clean"` (official `clean_caption` twice), `"lower"` or `"none"`.
        save_text_encoder (`bool`, *optional*, defaults to `False`):
            Write the encoder weights to `text_encoder/` on `save_pretrained` even when they can be reloaded from
            `text_encoder_name_or_path`.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        text_encoder: T5EncoderModel | None = None,
        max_length: int = DEFAULT_CAPTION_SLOTS,
        text_encoder_name_or_path: str | None = None,
        text_preprocessing: str = "clean",
        save_text_encoder: bool = False,
        **kwargs: Any,
    ) -> None:
        if not isinstance(tokenizer, PreTrainedTokenizerBase):
            raise TypeError(f"`tokenizer` must be a transformers tokenizer, got {type(tokenizer).__name__}.")
        if not isinstance(max_length, int) or max_length < 1:
            raise ValueError(f"`max_length` must be a positive int, got {max_length!r}.")
        if text_preprocessing not in TEXT_PREPROCESSING_MODES:
            raise ValueError(
                f"`text_preprocessing` must be one of {TEXT_PREPROCESSING_MODES}, got {text_preprocessing!r}."
            )
        self.max_length = max_length
        self.text_encoder_name_or_path = text_encoder_name_or_path
        self.text_preprocessing = text_preprocessing
        self.save_text_encoder = bool(save_text_encoder)
        self.text_encoder: T5EncoderModel | None = None
        super().__init__(tokenizer, **kwargs)
        if text_encoder is not None:
            self.set_text_encoder(text_encoder)

    # ------------------------------------------------------------------ construction

    def set_text_encoder(self, text_encoder: T5EncoderModel) -> None:
        """Attach `text_encoder` frozen (eval mode, `requires_grad=False`)."""
        if not isinstance(text_encoder, T5EncoderModel):
            raise TypeError(
                f"`text_encoder` must be a transformers `T5EncoderModel`, got {type(text_encoder).__name__}."
            )
        text_encoder.eval()
        text_encoder.requires_grad_(False)
        self.text_encoder = text_encoder

    @classmethod
    def from_text_encoder_pretrained(
        cls,
        name_or_path: str | os.PathLike = DEFAULT_TEXT_ENCODER,
        max_length: int = DEFAULT_CAPTION_SLOTS,
        dtype: torch.dtype | str = torch.bfloat16,
        text_preprocessing: str = "clean",
        **kwargs: Any,
    ) -> T5CaptionEncoder:
        """
        Build from a T5 checkpoint (Hub id or folder holding a tokenizer and a T5 model; e.g. `google/flan-t5-xl`):
        tokenizer + `T5EncoderModel` in `dtype` (official LlamaGen runs T5 in bf16). Hub kwargs are forwarded.
        """
        hub_kwargs = {key: kwargs.pop(key) for key in _HUB_KWARGS if key in kwargs}
        if kwargs:
            raise TypeError(f"Unexpected arguments {sorted(kwargs)}.")
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, **hub_kwargs)
        text_encoder = T5EncoderModel.from_pretrained(name_or_path, dtype=dtype, **hub_kwargs)
        return cls(
            tokenizer,
            text_encoder=text_encoder,
            max_length=max_length,
            text_encoder_name_or_path=os.fspath(name_or_path),
            text_preprocessing=text_preprocessing,
        )

    # ------------------------------------------------------------------ serialization

    def to_dict(self) -> dict[str, Any]:
        # The weights are saved separately (or referenced); keep them out of `processor_config.json`.
        text_encoder = self.__dict__.pop("text_encoder", None)
        try:
            return super().to_dict()
        finally:
            self.__dict__["text_encoder"] = text_encoder

    def save_pretrained(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs: Any) -> list:
        """
        Save `processor_config.json` (settings, `text_encoder_name_or_path`) and the tokenizer; the encoder weights go
        to `text_encoder/` when `save_text_encoder` is set or there is no `text_encoder_name_or_path` to reload from.
        """
        if push_to_hub:
            raise ValueError("Push the folder with `huggingface_hub.upload_folder` after `save_pretrained`.")
        files = super().save_pretrained(save_directory, **kwargs)
        if self.text_encoder is not None and (self.save_text_encoder or self.text_encoder_name_or_path is None):
            path = os.path.join(save_directory, TEXT_ENCODER_SUBFOLDER)
            self.text_encoder.save_pretrained(path)
            files.append(path)
        return files

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        text_encoder: T5EncoderModel | None = None,
        load_text_encoder: bool = True,
        text_encoder_name_or_path: str | None = None,
        dtype: torch.dtype | str | None = None,
        **kwargs: Any,
    ) -> T5CaptionEncoder:
        """
        Load a folder written by `save_pretrained`. The encoder comes from `text_encoder` (a loaded model), else from
        `<folder>/text_encoder/` when present, else from `text_encoder_name_or_path` (argument, then the recorded
        value). `load_text_encoder=False` gives a tokenizer-only encoder. `dtype` defaults to the saved weights'.
        """
        hub_kwargs = {key: kwargs[key] for key in _HUB_KWARGS if key in kwargs}
        encoder = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        if text_encoder is None and load_text_encoder:
            local = os.path.join(os.fspath(pretrained_model_name_or_path), TEXT_ENCODER_SUBFOLDER)
            source = local if os.path.isfile(os.path.join(local, "config.json")) else None
            source = source or text_encoder_name_or_path or encoder.text_encoder_name_or_path
            if source is None:
                raise OSError(
                    f"'{pretrained_model_name_or_path}' has no `{TEXT_ENCODER_SUBFOLDER}/` weights and records no "
                    "`text_encoder_name_or_path`; pass `text_encoder_name_or_path` (e.g. google/flan-t5-xl)."
                )
            text_encoder = T5EncoderModel.from_pretrained(source, dtype=dtype or "auto", **hub_kwargs)
        if text_encoder_name_or_path is not None:
            encoder.text_encoder_name_or_path = text_encoder_name_or_path
        if text_encoder is not None:
            encoder.set_text_encoder(text_encoder)
        return encoder

    # ------------------------------------------------------------------ encoding

    @property
    def device(self) -> torch.device:
        """Device of the T5 encoder (CPU without one)."""
        if self.text_encoder is None:
            return torch.device("cpu")
        return next(self.text_encoder.parameters()).device

    @property
    def hidden_size(self) -> int:
        """Width of the features, `d_model` (2048 for flan-T5-XL)."""
        if self.text_encoder is None:
            raise ValueError("No text encoder attached.")
        return self.text_encoder.config.d_model

    def to(self, device: str | torch.device) -> T5CaptionEncoder:
        """Move the encoder to `device`; returns `self`."""
        if self.text_encoder is not None:
            self.text_encoder.to(device)
        return self

    def tokenize(self, captions: Sequence[str]) -> dict[str, torch.Tensor]:
        """Captions -> `input_ids`, `attention_mask` `(B, max_length)`, right-padded and truncated (official call)."""
        if isinstance(captions, str):
            raise TypeError("`captions` must be a sequence of strings, not a single string.")
        texts = [preprocess_caption(caption, self.text_preprocessing) for caption in captions]
        return self.tokenizer(
            texts,
            max_length=self.max_length,
            padding="max_length",
            truncation=True,
            return_attention_mask=True,
            add_special_tokens=True,
            padding_side="right",
            return_tensors="pt",
        )

    @torch.no_grad()
    def encode(self, captions: Sequence[str], device: str | torch.device | None = None) -> dict[str, torch.Tensor]:
        """
        Captions -> LlamaGen T2I condition.

        Args:
            captions (`Sequence[str]`): B captions (GenEval prompts, dataset captions).
            device (*optional*): device of the outputs; the encoder is moved there first (it is frozen and shared).

        Returns:
            `dict` with `caption_embeds` `(B, max_length, d_model)` float32, valid tokens in the last slots and zeros
            before them, and `caption_mask` `(B, max_length)` int64 (1 on valid slots).
        """
        if self.text_encoder is None:
            raise ValueError(
                "This T5CaptionEncoder has no text encoder (loaded with `load_text_encoder=False`?); attach one with "
                "`set_text_encoder` or use pre-computed `caption_embeds`."
            )
        if device is not None and torch.device(device) != self.device:
            self.text_encoder.to(device)
        tokens = self.tokenize(captions)
        hidden = self.text_encoder(
            input_ids=tokens["input_ids"].to(self.device), attention_mask=tokens["attention_mask"].to(self.device)
        ).last_hidden_state
        embeds, mask = right_align_captions(hidden.float(), tokens["attention_mask"].to(self.device))
        return {"caption_embeds": embeds, "caption_mask": mask}

    def __call__(self, captions: Sequence[str], device: str | torch.device | None = None) -> dict[str, torch.Tensor]:
        """Alias of `encode`."""
        return self.encode(captions, device=device)


def load_caption_encoder(name_or_path: str, max_length: int, dtype: str = "bfloat16") -> T5CaptionEncoder:
    """A `T5CaptionEncoder` from a `T5CaptionEncoder` folder (has `processor_config.json`) or a T5 checkpoint."""
    if os.path.isfile(os.path.join(name_or_path, "processor_config.json")):
        encoder = T5CaptionEncoder.from_pretrained(name_or_path, dtype=getattr(torch, dtype))
        if encoder.max_length != max_length:
            raise ValueError(
                f"{name_or_path} encodes {encoder.max_length} caption slots, the policy has {max_length}."
            )
        return encoder
    return T5CaptionEncoder.from_text_encoder_pretrained(
        name_or_path, max_length=max_length, dtype=getattr(torch, dtype)
    )


__all__ = [
    "DEFAULT_CAPTION_SLOTS",
    "DEFAULT_TEXT_ENCODER",
    "TEXT_ENCODER_SUBFOLDER",
    "T5CaptionEncoder",
    "load_caption_encoder",
    "clean_caption",
    "pad_caption_features",
    "preprocess_caption",
    "right_align_captions",
]
