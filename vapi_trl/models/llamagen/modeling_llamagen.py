"""
LlamaGen class-to-image generator on transformers' `LlamaModel` with LlamaGen's 2D rotary embedding.

Port of FoundationVision/LlamaGen `autoregressive/models/gpt.py`. Parameter names (official → here): `tok_embeddings` →
`model.embed_tokens`, `layers.i.attention.wqkv` → `model.layers.i.self_attn.{q,k,v}_proj` (split by
`[dim, kv_dim, kv_dim]`; q and k rows permuted by `permute_interleaved_to_half`), `attention.wo` → `self_attn.o_proj`,
`feed_forward.w1/w3/w2` → `mlp.gate_proj/up_proj/down_proj`, `attention_norm` → `input_layernorm`, `ffn_norm` →
`post_attention_layernorm`, `norm` → `model.norm`, `output` → `lm_head`, `cls_embedding.embedding_table` →
`class_embed`.

Dropout follows the official model (train mode only): `token_dropout_p` on the input embeddings, `resid_dropout_p` on
the attention output, `ffn_dropout_p` on the SwiGLU output, `attn_dropout_p` on the attention probabilities and
`class_dropout_prob` on the condition. No parameter is added: checkpoints keep the same keys.
"""

from typing import Any

from typing_extensions import Unpack

import torch
from torch import nn
from transformers import DynamicCache, LlamaModel, PreTrainedModel
from transformers import initialization as init
from transformers.models.llama.modeling_llama import LlamaAttention, LlamaMLP

from ...sampling import feed_with_cache, guide_batch, sample_with_cache, SamplingKwargs, token_sampler
from ..modeling_utils import (
    ClassConditionMixin,
    ConditionDropout,
    DeprecatedPrepareConditionMixin,
    ImageTokenLogitsOutput,
    ImageTokenPolicyMixin,
    StrictLoadingMixin,
    check_context_ids,
)
from .configuration_llamagen import LlamaGenConfig
from .processing_llamagen import LlamaGenProcessor


def permute_interleaved_to_half(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """
    Reorder the rows of an official LlamaGen q or k projection from interleaved RoPE pairs to HF's half-split layout.

    Official LlamaGen rotates the pairs `(2j, 2j+1)` of each head; transformers' `apply_rotary_pos_emb` rotates
    `(j, j + head_dim/2)` with the angle of entry `j` of `cos`/`sin`. Row `2j` must become row `j` and row `2j+1` row
    `j + head_dim/2`: view `(n_heads, head_dim/2, 2, ...)` and swap axes 1 and 2. Values, outputs and attention scores
    are unchanged because q and k get the same permutation.

    Args:
        weight (`torch.Tensor` of shape `(n_heads * head_dim, in_features)` or `(n_heads * head_dim,)`):
            Query rows (`n_heads = num_attention_heads`) or key rows (`n_heads = num_key_value_heads`) of `wqkv`.
        n_heads (`int`): number of heads stacked in `weight`.

    Returns:
        `torch.Tensor` of the same shape with the rows of every head reordered.
    """
    if weight.shape[0] % n_heads or (weight.shape[0] // n_heads) % 2:
        raise ValueError(
            f"`weight` has {weight.shape[0]} rows, which is not `n_heads` ({n_heads}) times an even head dimension."
        )
    head_dim = weight.shape[0] // n_heads
    return weight.reshape(n_heads, head_dim // 2, 2, *weight.shape[1:]).transpose(1, 2).reshape(weight.shape)


def permute_half_to_interleaved(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Inverse of `permute_interleaved_to_half`, for exporting q/k rows back to the official layout (same shapes)."""
    if weight.shape[0] % n_heads or (weight.shape[0] // n_heads) % 2:
        raise ValueError(
            f"`weight` has {weight.shape[0]} rows, which is not `n_heads` ({n_heads}) times an even head dimension."
        )
    head_dim = weight.shape[0] // n_heads
    return weight.reshape(n_heads, 2, head_dim // 2, *weight.shape[1:]).transpose(1, 2).reshape(weight.shape)


class LlamaGen2DRotaryEmbedding(nn.Module):
    """
    LlamaGen's 2D RoPE (`precompute_freqs_cis_2d`) in transformers' half-split `(cos, sin)` format.

    Position `p >= cls_token_num` is image token `i = p - cls_token_num` at row `i // grid_size`, column
    `i % grid_size`. Rotary pair `j < head_dim/4` turns by `row * f_j`, pair `head_dim/4 + j` by `col * f_j`, with
    `f_j = base^(-4j / head_dim)`. The condition slots `p < cls_token_num` get `cos = sin = 0`, as the official zero
    rows of the cache: their queries and keys vanish, so they act only through their values.

    The table is recomputed from `position_ids` on each call (no buffers): exact in fp32, negligible next to attention,
    and nothing to re-initialise after meta-device loading.
    """

    def __init__(self, head_dim: int, grid_size: int, cls_token_num: int, base: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 4:
            raise ValueError(f"2D RoPE needs a head dimension divisible by 4, got {head_dim}.")
        self.head_dim = head_dim
        self.grid_size = grid_size
        self.cls_token_num = cls_token_num
        self.base = base

    @torch.no_grad()
    def forward(self, x: torch.Tensor, position_ids: torch.LongTensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            x (`torch.Tensor`): any tensor on the target device and dtype (the hidden states).
            position_ids (`torch.LongTensor` of shape `(batch_size, seq_len)`): sequence positions, condition slots
                first.

        Returns:
            `(cos, sin)`, each `(batch_size, seq_len, head_dim)` in `x.dtype`, zero at condition slots.
        """
        half_dim = self.head_dim // 2
        # Same ops as the official table, so the fp32 values match bit for bit.
        exponents = torch.arange(0, half_dim, 2, device=x.device)[: half_dim // 2].float() / half_dim
        freqs = 1.0 / (self.base**exponents)
        image_pos = position_ids.to(x.device) - self.cls_token_num
        is_image = (image_pos >= 0).unsqueeze(-1)
        image_pos = image_pos.clamp(min=0)
        rows = (image_pos // self.grid_size).float().unsqueeze(-1)
        cols = (image_pos % self.grid_size).float().unsqueeze(-1)
        angles = torch.cat((rows * freqs, cols * freqs), dim=-1)  # (batch, seq, head_dim / 2)
        emb = torch.cat((angles, angles), dim=-1)
        cos = torch.where(is_image, emb.cos(), 0.0)
        sin = torch.where(is_image, emb.sin(), 0.0)
        return cos.to(dtype=x.dtype), sin.to(dtype=x.dtype)

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, grid_size={self.grid_size}, cls_token_num={self.cls_token_num}"


class LlamaGenAttention(LlamaAttention):
    """`LlamaAttention` followed by the official residual dropout on its output (`resid_dropout` after `wo`)."""

    def __init__(self, config, layer_idx: int, resid_dropout_p: float) -> None:
        super().__init__(config, layer_idx)
        self.resid_dropout = nn.Dropout(resid_dropout_p)

    def forward(self, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        attn_output, attn_weights = super().forward(*args, **kwargs)
        return self.resid_dropout(attn_output), attn_weights


class LlamaGenMLP(LlamaMLP):
    """`LlamaMLP` (SwiGLU) followed by the official `ffn_dropout` after `w2`."""

    def __init__(self, config, ffn_dropout_p: float) -> None:
        super().__init__(config)
        self.ffn_dropout = nn.Dropout(ffn_dropout_p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn_dropout(super().forward(x))


# The shared logits-only output; the family name is kept for code that imports it.
LlamaGenOutput = ImageTokenLogitsOutput


class LlamaGenPreTrainedModel(StrictLoadingMixin, PreTrainedModel):
    """Base class: weight init, gradient checkpointing of `LlamaDecoderLayer` blocks, attention backends."""

    config: LlamaGenConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["LlamaDecoderLayer"]
    _skip_keys_device_placement = ["past_key_values"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _conversion_hint = "convert official checkpoints with `vapi-trl convert-llamagen`"

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, LlamaGenForClassToImage):
            init.normal_(module.class_embed.weight, mean=0.0, std=self.config.initializer_range)


class _LlamaGenImageModel(ImageTokenPolicyMixin, LlamaGenPreTrainedModel):
    """
    What `LlamaGenForClassToImage` and `LlamaGenForTextToImage` share: the Llama backbone with 2D RoPE, the sizes, the
    guided codebook head (`lm_head`, set by the subclass) and KV-cache decoding after the condition slots.
    """

    def _build_backbone(self, config: LlamaGenConfig) -> None:
        backbone_config = config.to_llama_config()
        backbone_config._attn_implementation = config._attn_implementation
        self.model = LlamaModel(backbone_config)
        # The official residual and FFN dropout sit inside the block; swapping in subclasses keeps the parameter names.
        for index, layer in enumerate(self.model.layers):
            layer.self_attn = LlamaGenAttention(backbone_config, index, float(config.resid_dropout_p))
            layer.mlp = LlamaGenMLP(backbone_config, float(config.ffn_dropout_p))
        self.token_dropout = nn.Dropout(float(config.token_dropout_p))
        self.condition_dropout = ConditionDropout(float(config.class_dropout_prob))
        self.model.rotary_emb = LlamaGen2DRotaryEmbedding(
            head_dim=config.head_dim,
            grid_size=config.grid_size,
            cls_token_num=config.cls_token_num,
            base=float(config.rope_theta),
        )

    @property
    def num_image_tokens(self) -> int:
        """Number of image tokens N per image (`config.block_size`)."""
        return self.config.block_size

    def get_input_embeddings(self) -> nn.Embedding:
        """The image-id embedding `model.embed_tokens` (`vocab_size` rows)."""
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.embed_tokens = value

    # Internals shared by the teacher-forced pass and KV-cache decoding

    def _attention_mask(self, key_mask: torch.Tensor, start: int, length: int, dtype: torch.dtype) -> torch.Tensor:
        """
        The official mask for queries at positions `[start, start + length)` over keys `[0, K)`: causal, padded caption
        slots hidden, and the diagonal always visible. `key_mask` `(B, K)` is 1 on visible keys. Returns a 4D mask in
        the backbone's attention format (bool for SDPA, additive for eager); flash attention gets the 2D key mask.
        """
        implementation = self.model.config._attn_implementation or "sdpa"
        if implementation.startswith(("flash", "paged")):
            return key_mask  # variable-length attention drops padded rows; image rows see the same keys
        if implementation not in ("sdpa", "eager"):
            raise ValueError(
                f"LlamaGenForTextToImage supports attn_implementation 'sdpa', 'eager' or flash attention, got "
                f"{implementation!r}."
            )
        device = key_mask.device
        queries = torch.arange(start, start + length, device=device)[:, None]
        keys = torch.arange(key_mask.shape[1], device=device)[None, :]
        allowed = ((keys <= queries)[None] & key_mask.bool()[:, None, :]) | (keys == queries)[None]
        allowed = allowed[:, None]  # (B, 1, Q, K)
        if implementation == "sdpa":
            return allowed
        return torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)

    def _backbone(
        self,
        inputs_embeds: torch.Tensor,
        start: int,
        key_mask: torch.Tensor | None = None,
        past_key_values: DynamicCache | None = None,
    ) -> torch.Tensor:
        """Hidden states of positions `[start, start + L)`: causal attention, under `key_mask` `(B, K)` when given."""
        inputs_embeds = self.token_dropout(inputs_embeds)
        length = inputs_embeds.shape[1]
        position_ids = torch.arange(start, start + length, device=inputs_embeds.device).unsqueeze(0)
        attention_mask = (
            None if key_mask is None else self._attention_mask(key_mask, start, length, inputs_embeds.dtype)
        )
        return self.model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            use_cache=past_key_values is not None,
        ).last_hidden_state

    def _guided_logits(self, hidden_states: torch.Tensor, cfg_scale: float) -> torch.Tensor:
        return guide_batch(self.lm_head(hidden_states).float(), cfg_scale)

    def _context_ids(
        self, context_ids: torch.LongTensor | None, reference: torch.Tensor, cfg_scale: float, alone: str
    ) -> torch.LongTensor:
        """Checked `context_ids` (empty when `None`), doubled for the unconditional rows when `cfg_scale != 1`."""
        batch_size = reference.shape[0]
        if context_ids is None:
            context_ids = reference.new_zeros((batch_size, 0), dtype=torch.long)
        check_context_ids(context_ids, batch_size, self.num_image_tokens - 1, alone)
        return torch.cat((context_ids, context_ids)) if cfg_scale != 1.0 else context_ids

    def _check_image_ids(self, image_ids: torch.LongTensor, batch_size: int) -> None:
        max_length = self.num_image_tokens - 1
        if image_ids.dim() != 2 or image_ids.shape[0] != batch_size or image_ids.shape[1] > max_length:
            raise ValueError(
                f"`image_ids` must have shape ({batch_size}, length <= {max_length}), got {tuple(image_ids.shape)}."
            )

    def _start_decoding(self, condition_embeds: torch.Tensor, cfg_scale: float, key_mask: torch.Tensor | None = None):
        """
        Run the condition slots `(B or 2B, cls_token_num, D)` into a fresh cache. Returns the logits of image token 0
        `(B, V)` and `step(image_ids, index)`, which feeds image token `index` `(B,)` (growing `key_mask` when given)
        and returns the logits of token `index + 1` `(B, V)`.
        """
        cache = DynamicCache(config=self.model.config)
        hidden = self._backbone(condition_embeds, 0, key_mask, past_key_values=cache)

        def step(image_ids: torch.LongTensor, index: int) -> torch.Tensor:
            nonlocal key_mask
            if cfg_scale != 1.0:
                image_ids = torch.cat((image_ids, image_ids))
            if key_mask is not None:
                key_mask = torch.cat((key_mask, key_mask.new_ones((key_mask.shape[0], 1))), dim=1)
            embeds = self.model.embed_tokens(image_ids).unsqueeze(1)
            hidden = self._backbone(embeds, self.config.cls_token_num + index, key_mask, past_key_values=cache)
            return self._guided_logits(hidden[:, -1], cfg_scale)

        return self._guided_logits(hidden[:, -1], cfg_scale), step


class LlamaGenForClassToImage(ClassConditionMixin, _LlamaGenImageModel):
    """
    LlamaGen C2I: a class token followed by the image ids, Llama decoder with 2D RoPE, logits over the codebook.

    `forward` is the teacher-forced pass (one call for all N positions); `sample` is free-running KV-cache decoding.
    Row `num_classes` of `class_embed` is the null class used for classifier-free guidance.

    Note: official LlamaGen zero-initialises the output head for training from scratch; here it follows the generic
    normal init, since the model is post-trained from checkpoints and a zero head makes random test models degenerate.
    """

    # Turns dataset rows into `class_labels`.
    processor_class = LlamaGenProcessor

    def __init__(self, config: LlamaGenConfig) -> None:
        super().__init__(config)
        if config.task != "c2i":
            raise ValueError(f"`LlamaGenForClassToImage` needs `config.task='c2i'`, got {config.task!r}.")
        self._build_backbone(config)
        self.class_embed = nn.Embedding(config.num_classes + 1, config.hidden_size)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self._ensure_generation_config()

        self.post_init()

    # Sizes and conditions

    @property
    def grid_size(self) -> int:
        """Side of the token grid, `sqrt(N)`."""
        return self.config.grid_size

    def _start_class_decoding(self, class_labels: torch.LongTensor, cfg_scale: float):
        """Run the class slot into a fresh cache; see `_start_decoding`."""
        self._check_class_labels(class_labels)
        if cfg_scale != 1.0:
            class_labels = torch.cat((class_labels, self.uncond(class_labels)))
        return self._start_decoding(self.class_embed(class_labels).unsqueeze(1), cfg_scale)

    # Public passes

    def forward(
        self,
        class_labels: torch.LongTensor,
        context_ids: torch.LongTensor | None = None,
        cfg_scale: float = 1.0,
    ) -> LlamaGenOutput:
        """
        Teacher-forced pass over all image positions in one call.

        Args:
            class_labels (`torch.LongTensor` of shape `(batch_size,)`):
                Classes in `[0, num_classes)`; `num_classes` is the null class.
            context_ids (`torch.LongTensor` of shape `(batch_size, num_image_tokens - 1)`, *optional*):
                Image ids in `[0, vocab_size)` fed as inputs (the first N−1 tokens, possibly corrupted). `None` or
                length 0 runs the class slot alone.
            cfg_scale (`float`, *optional*, defaults to `1.0`):
                Classifier-free guidance scale. When `!= 1`, the null-class rows run in the same 2B batch and the
                output is `u + cfg_scale * (c - u)`; gradients flow through both branches.

        Returns:
            `LlamaGenOutput` with `logits` of shape `(batch_size, num_image_tokens, vocab_size)` (or
            `(batch_size, 1, vocab_size)` without context) in fp32: index `t` predicts image token `t` from the class
            and `context_ids[:, :t]`.
        """
        self._check_class_labels(class_labels)
        context_ids = self._context_ids(context_ids, class_labels, cfg_scale, "the class slot")
        class_labels = self.condition_dropout(class_labels, self.uncond(class_labels))  # train mode only
        if cfg_scale != 1.0:
            class_labels = torch.cat((class_labels, self.uncond(class_labels)))
        inputs_embeds = torch.cat(
            (self.class_embed(class_labels).unsqueeze(1), self.model.embed_tokens(context_ids)), dim=1
        )
        hidden = self._backbone(inputs_embeds, start=0)
        return LlamaGenOutput(logits=self._guided_logits(hidden[:, self.config.cls_token_num - 1 :], cfg_scale))

    @torch.no_grad()
    def stepwise_logits(
        self, class_labels: torch.LongTensor, image_ids: torch.LongTensor, cfg_scale: float = 1.0
    ) -> torch.Tensor:
        """
        KV-cache decoding fed with given ids, one token per step: the incremental counterpart of `forward`, for checks.

        Args:
            class_labels (`torch.LongTensor` of shape `(batch_size,)`): classes, as in `forward`.
            image_ids (`torch.LongTensor` of shape `(batch_size, length)`): ids fed in order, `length <= N - 1`.
            cfg_scale (`float`, *optional*, defaults to `1.0`): guidance scale, as in `forward`.

        Returns:
            `torch.FloatTensor` of shape `(batch_size, length + 1, vocab_size)`: step `t` predicts image token `t`.
        """
        self._check_image_ids(image_ids, len(class_labels))
        return feed_with_cache(*self._start_class_decoding(class_labels, cfg_scale), image_ids)

    @torch.no_grad()
    def sample(
        self,
        class_labels: torch.LongTensor,
        cfg_scale: float = 1.0,
        **sampling: Unpack[SamplingKwargs],
    ) -> torch.LongTensor:
        """
        Free-running autoregressive sampling with a KV cache, as official `generate`: CFG, then temperature, top-k,
        top-p.

        Args:
            class_labels (`torch.LongTensor` of shape `(batch_size,)`): classes in `[0, num_classes]`.
            cfg_scale (`float`, *optional*, defaults to `1.0`): guidance scale; `!= 1` decodes cond and null-class
                rows as one 2B batch that shares each drawn token.
            sampling: `temperature`, `top_k`, `top_p`, `generator`, `greedy` (`vapi_trl.sampling.SamplingKwargs`).

        Returns:
            `torch.LongTensor` of shape `(batch_size, num_image_tokens)`: ids in `[0, vocab_size)`, raster order.
        """
        draw = token_sampler(**sampling)
        return sample_with_cache(*self._start_class_decoding(class_labels, cfg_scale), self.num_image_tokens, draw)


class LlamaGenCaptionProjection(nn.Module):
    """
    Official `CaptionEmbedder.cap_proj` (`MLP` in `gpt.py`): `fc1` `(caption_dim -> hidden_size)`, GELU (tanh
    approximation), `fc2` `(hidden_size -> hidden_size)`, both bias-free.
    """

    def __init__(self, caption_dim: int, hidden_size: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(caption_dim, hidden_size, bias=False)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden_size, hidden_size, bias=False)

    def forward(self, caption_embeds: torch.Tensor) -> torch.Tensor:
        """`(batch_size, slots, caption_dim)` -> `(batch_size, slots, hidden_size)`."""
        return self.fc2(self.act(self.fc1(caption_embeds)))


class LlamaGenForTextToImage(DeprecatedPrepareConditionMixin, _LlamaGenImageModel):
    """
    LlamaGen T2I: `cls_token_num` (120) caption slots projected from frozen flan-T5-XL features, then the image ids;
    Llama decoder with 2D RoPE (zero rotation on the caption slots), logits over the codebook.

    Conditioning (official `CaptionEmbedder` and `generate`): the caption occupies the LAST slots ("left padding"),
    `caption_mask` marks them, and every position attends to the valid caption slots, the earlier image tokens and
    itself (padded slots only see themselves, so no attention row is empty). The null caption of classifier-free
    guidance is `uncond_embedding` `(cls_token_num, caption_dim)` in every slot, under the conditional row's mask.
    `uncond_embedding` is a persistent buffer, as officially (`register_buffer`): saved and converted, never trained.

    The T5 encoder is not part of the model: `LlamaGenProcessor` (`processor_class`) holds it and turns rows into
    `caption_embeds` / `caption_mask`, or reads pre-computed `caption_embeds` rows (`vapi-trl encode-captions`).

    Example:

    ```python
    from vapi_trl.models import LlamaGenForTextToImage, LlamaGenProcessor, T5CaptionEncoder

    policy = LlamaGenForTextToImage.from_pretrained("llamagen-t2i-xl/policy")
    text_encoder = T5CaptionEncoder.from_pretrained("llamagen-t2i-xl/text_encoder")
    processor = LlamaGenProcessor.from_policy(policy, text_processor=text_encoder)
    condition = processor.prepare_condition([{"prompt": "a photo of a cat"}])
    ids = policy.sample(**condition, cfg_scale=7.5, top_k=2000)  # (1, 256) codebook ids
    ```
    """

    # The condition interface VAPiTrainer uses. Rows may also carry pre-computed `caption_embeds` (+ `caption_mask`).
    condition_columns: tuple[str, ...] = ("prompt",)
    # Turns dataset rows into `caption_embeds` / `caption_mask` (T5 encoding, right alignment).
    processor_class = LlamaGenProcessor

    def __init__(self, config: LlamaGenConfig) -> None:
        super().__init__(config)
        if config.task != "t2i":
            raise ValueError(f"`LlamaGenForTextToImage` needs `config.task='t2i'`, got {config.task!r}.")
        self._build_backbone(config)
        self.caption_proj = LlamaGenCaptionProjection(config.caption_dim, config.hidden_size)
        self.register_buffer("uncond_embedding", torch.empty(config.cls_token_num, config.caption_dim))
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self._ensure_generation_config()
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, LlamaGenForTextToImage):
            # Official init: randn / sqrt(caption_dim).
            init.normal_(module.uncond_embedding, mean=0.0, std=self.config.caption_dim**-0.5)

    # Sizes and conditions

    @property
    def num_caption_slots(self) -> int:
        """Caption slots before the image tokens (`config.cls_token_num`, 120 officially)."""
        return self.config.cls_token_num

    def uncond(self, caption_embeds: torch.Tensor) -> torch.Tensor:
        """The null caption shaped like `caption_embeds` `(batch_size, slots, caption_dim)`: `uncond_embedding`."""
        return self.uncond_embedding.to(caption_embeds.dtype).expand_as(caption_embeds)

    def drop_condition(self, condition: dict[str, torch.Tensor], drop: torch.Tensor) -> dict[str, torch.Tensor]:
        """Replace the captions of rows where `drop` `(batch_size,)` bool is set by the null caption (mask kept)."""
        embeds = condition["caption_embeds"]
        dropped = torch.where(drop.to(embeds.device)[:, None, None], self.uncond(embeds), embeds)
        return {**condition, "caption_embeds": dropped}

    # Internals

    def _check_caption(self, caption_embeds: torch.Tensor, caption_mask: torch.Tensor) -> None:
        slots, dim = self.config.cls_token_num, self.config.caption_dim
        if not isinstance(caption_embeds, torch.Tensor) or not caption_embeds.is_floating_point():
            raise TypeError(f"`caption_embeds` must be a float tensor of shape (batch_size, {slots}, {dim}).")
        if caption_embeds.dim() != 3 or tuple(caption_embeds.shape[1:]) != (slots, dim):
            raise ValueError(
                f"`caption_embeds` must have shape (batch_size, {slots}, {dim}) (cls_token_num, caption_dim), got "
                f"{tuple(caption_embeds.shape)}; encode captions with a T5CaptionEncoder of max_length={slots}."
            )
        if not isinstance(caption_mask, torch.Tensor) or tuple(caption_mask.shape) != tuple(caption_embeds.shape[:2]):
            got = tuple(caption_mask.shape) if isinstance(caption_mask, torch.Tensor) else type(caption_mask).__name__
            raise ValueError(f"`caption_mask` must have shape {tuple(caption_embeds.shape[:2])}, got {got}.")

    def _with_uncond(
        self, caption_embeds: torch.Tensor, caption_mask: torch.Tensor, cfg_scale: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if cfg_scale == 1.0:
            return caption_embeds, caption_mask
        return torch.cat((caption_embeds, self.uncond(caption_embeds))), torch.cat((caption_mask, caption_mask))

    def _caption_inputs(self, caption_embeds: torch.Tensor) -> torch.Tensor:
        return self.caption_proj(caption_embeds.to(self.caption_proj.fc1.weight.dtype))

    def _start_caption_decoding(self, caption_embeds: torch.Tensor, caption_mask: torch.Tensor, cfg_scale: float):
        """Run the caption slots into a fresh cache; see `_start_decoding`."""
        self._check_caption(caption_embeds, caption_mask)
        caption_embeds, caption_mask = self._with_uncond(caption_embeds, caption_mask, cfg_scale)
        return self._start_decoding(self._caption_inputs(caption_embeds), cfg_scale, caption_mask.long())

    # Public passes

    def forward(
        self,
        caption_embeds: torch.FloatTensor,
        caption_mask: torch.LongTensor,
        context_ids: torch.LongTensor | None = None,
        cfg_scale: float = 1.0,
    ) -> LlamaGenOutput:
        """
        Teacher-forced pass over all image positions in one call.

        Args:
            caption_embeds (`torch.FloatTensor` of shape `(batch_size, cls_token_num, caption_dim)`):
                T5 features, right-aligned (valid tokens in the last slots), any float dtype.
            caption_mask (`torch.LongTensor` of shape `(batch_size, cls_token_num)`):
                1 on valid caption slots, 0 on padding.
            context_ids (`torch.LongTensor` of shape `(batch_size, num_image_tokens - 1)`, *optional*):
                Image ids in `[0, vocab_size)` fed as inputs (the first N−1 tokens, possibly corrupted). `None` or
                length 0 runs the caption slots alone.
            cfg_scale (`float`, *optional*, defaults to `1.0`):
                Classifier-free guidance scale. When `!= 1`, null-caption rows run in the same 2B batch and the output
                is `u + cfg_scale * (c - u)`; gradients flow through both branches.

        Returns:
            `LlamaGenOutput` with `logits` `(batch_size, num_image_tokens, vocab_size)` (or `(batch_size, 1,
            vocab_size)` without context) in fp32: index `t` predicts image token `t` from the caption and
            `context_ids[:, :t]`.
        """
        self._check_caption(caption_embeds, caption_mask)
        context_ids = self._context_ids(context_ids, caption_mask, cfg_scale, "the caption slots")
        caption_embeds = self.condition_dropout(caption_embeds, self.uncond(caption_embeds))  # train mode only
        caption_embeds, caption_mask = self._with_uncond(caption_embeds, caption_mask, cfg_scale)
        inputs_embeds = torch.cat((self._caption_inputs(caption_embeds), self.model.embed_tokens(context_ids)), dim=1)
        key_mask = torch.cat((caption_mask.long(), caption_mask.new_ones(context_ids.shape, dtype=torch.long)), dim=1)
        hidden = self._backbone(inputs_embeds, 0, key_mask)
        return LlamaGenOutput(logits=self._guided_logits(hidden[:, self.config.cls_token_num - 1 :], cfg_scale))

    @torch.no_grad()
    def stepwise_logits(
        self,
        caption_embeds: torch.FloatTensor,
        caption_mask: torch.LongTensor,
        image_ids: torch.LongTensor,
        cfg_scale: float = 1.0,
    ) -> torch.Tensor:
        """
        KV-cache decoding fed with given ids, one token per step: the incremental counterpart of `forward`, for checks.

        Args:
            caption_embeds, caption_mask: as in `forward`.
            image_ids (`torch.LongTensor` of shape `(batch_size, length)`): ids fed in order, `length <= N - 1`.
            cfg_scale (`float`, *optional*, defaults to `1.0`): guidance scale, as in `forward`.

        Returns:
            `torch.FloatTensor` of shape `(batch_size, length + 1, vocab_size)`: step `t` predicts image token `t`.
        """
        self._check_image_ids(image_ids, caption_embeds.shape[0])
        start = self._start_caption_decoding(caption_embeds, caption_mask, cfg_scale)
        return feed_with_cache(*start, image_ids)

    @torch.no_grad()
    def sample(
        self,
        caption_embeds: torch.FloatTensor,
        caption_mask: torch.LongTensor,
        cfg_scale: float = 1.0,
        **sampling: Unpack[SamplingKwargs],
    ) -> torch.LongTensor:
        """
        Free-running autoregressive sampling with a KV cache, as official `generate`: CFG with the null caption under
        the conditional mask, then temperature, top-k, top-p. (The official T2I script defaults to CFG 7.5 and top-k
        2000; GenEval runs record the setting used.)

        Args:
            caption_embeds, caption_mask: as in `forward` (from `LlamaGenProcessor`).
            cfg_scale (`float`, *optional*, defaults to `1.0`): guidance scale; `!= 1` decodes cond and null rows as
                one 2B batch sharing each drawn token.
            sampling: `temperature`, `top_k`, `top_p`, `generator`, `greedy` (`vapi_trl.sampling.SamplingKwargs`).

        Returns:
            `torch.LongTensor` of shape `(batch_size, num_image_tokens)`: ids in `[0, vocab_size)`, raster order.
        """
        draw = token_sampler(**sampling)
        start = self._start_caption_decoding(caption_embeds, caption_mask, cfg_scale)
        return sample_with_cache(*start, self.num_image_tokens, draw)


__all__ = [
    "LlamaGen2DRotaryEmbedding",
    "LlamaGenCaptionProjection",
    "LlamaGenForClassToImage",
    "LlamaGenForTextToImage",
    "LlamaGenOutput",
    "LlamaGenPreTrainedModel",
    "permute_half_to_interleaved",
    "permute_interleaved_to_half",
]
