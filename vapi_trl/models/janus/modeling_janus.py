"""
Janus / Janus-Pro text-to-image policy for VA-π, on transformers' `JanusForConditionalGeneration`.

`JanusForImageGeneration` subclasses the transformers model, so `from_pretrained` reads a transformers-format Janus-Pro
checkpoint (e.g. `deepseek-community/Janus-Pro-1B`) as is and `save_pretrained` writes a complete checkpoint
(same keys, loadable by `JanusForConditionalGeneration` too). It adds the policy interface `VAPiTrainer` uses:

- `forward(prompt_ids, prompt_mask, context_ids, cfg_scale)`: the teacher-forced pass over all N image positions in one
  call (design notes, models.md §1): `inputs_embeds = cat(embed_tokens(prompt), generation_aligner(
  generation_embeddings(ctx)))`, `position_ids = cumsum(mask) - 1` (so left padding does not shift RoPE),
  `logits = generation_head(h[:, Lp-1:])`. The BOI state predicts image token 0 and image input i predicts token i + 1
  (not the official trainer's off-by-one, algorithm.md §5).
- `drop_condition` (Janus' unconditional row: every prompt token but BOS and BOI replaced by the pad id, attention mask
  kept); the prompts themselves (captions -> chat prompts + BOI, left-padded) come from `JanusImageGenerationProcessor`
  (`processor_class`), which also records the special ids in `generation_config` once (`prepare_policy`).
- `codebook_size`, `num_image_tokens`, `condition_columns = ("prompt",)`.

Called without `prompt_ids`, `forward` is the parent's multimodal forward, so text generation and understanding keep
working. Image-mode `generate` is inherited unchanged; `sample` is the equivalent KV-cache decoding with this package's
sampler, left-padding safe.

Trainable: `language_model` (incl. the prompt embeddings), `generation_embeddings`, `generation_aligner`,
`generation_head`. Frozen at construction: the understanding tower (`vision_model`, `aligner`), the VQ (`vqmodel`) and
`lm_head`, unless `lm_head` is tied to the prompt embeddings (`JanusConfig.tie_word_embeddings`, True by default and in
the converted Janus-Pro checkpoints): a tied head IS `embed_tokens`, which the official run trains, so it stays
trainable. It gets no gradient through the text head (never used here), only through the prompt embeddings; note that
text generation from the aligned checkpoint then uses the updated embeddings as its output head.
"""

from typing import Any

from typing_extensions import Unpack

import torch
from torch import nn
from transformers import DynamicCache, JanusConfig, JanusForConditionalGeneration

from ...sampling import feed_with_cache, guide_batch, sample_with_cache, SamplingKwargs, token_sampler
from ..modeling_utils import DeprecatedPrepareConditionMixin, ImageTokenLogitsOutput, check_context_ids
from .processing_janus import JanusImageGenerationProcessor, janus_special_token_ids


# The shared logits-only output; the family name is kept for code that imports it.
JanusImageGenerationOutput = ImageTokenLogitsOutput


class JanusForImageGeneration(DeprecatedPrepareConditionMixin, JanusForConditionalGeneration):
    """
    Janus(-Pro) as a VA-π text-to-image policy: teacher-forced image-token logits from a chat prompt.

    Example:

    ```python
    from transformers import AutoTokenizer
    from vapi_trl.models import JanusForImageGeneration, JanusImageGenerationProcessor

    policy = JanusForImageGeneration.from_pretrained("deepseek-community/Janus-Pro-1B")
    tokenizer = AutoTokenizer.from_pretrained("deepseek-community/Janus-Pro-1B")
    processor = JanusImageGenerationProcessor(tokenizer)
    processor.prepare_policy(policy)  # records BOS / BOI / pad in `generation_config`, once
    ids = policy.sample(**processor.prepare_condition([{"prompt": "a red apple on a table"}]), cfg_scale=5.0)
    ```
    """

    # `LlamaDecoderLayer` is the unit FSDP auto-wraps and device maps keep whole.
    _no_split_modules = ["JanusVisionEncoderLayer", "LlamaDecoderLayer"]

    # The condition interface VAPiTrainer uses: dataset columns -> forward kwargs, and the null condition.
    condition_columns: tuple[str, ...] = ("prompt",)
    # Turns dataset rows into `prompt_ids` / `prompt_mask` and records the special ids once (`prepare_policy`).
    processor_class = JanusImageGenerationProcessor

    def __init__(self, config: JanusConfig) -> None:
        super().__init__(config)
        self.freeze_non_generation_modules()

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> "JanusForImageGeneration":
        """`JanusForConditionalGeneration.from_pretrained`, then `freeze_non_generation_modules`.

        Loading replaces the parameters built in `__init__` (fresh tensors default to `requires_grad=True`), so the
        freezing done there is repeated on the loaded model; otherwise DDP would wait for gradients of the frozen
        towers.
        """
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded  # `output_loading_info=True` returns a tuple
        model.freeze_non_generation_modules()
        return loaded

    # ------------------------------------------------------------------ sizes, freezing, special ids

    @property
    def codebook_size(self) -> int:
        """Number of image-token ids K (`vq_config.num_embeddings`, 16384 for Janus-Pro)."""
        return self.config.vq_config.num_embeddings

    @property
    def num_image_tokens(self) -> int:
        """Image tokens N per image, `vq_config.num_patches`² (576 for Janus-Pro at 384²)."""
        return self.config.vq_config.num_patches**2

    @property
    def lm_head_is_tied(self) -> bool:
        """Whether `lm_head.weight` is the prompt embedding matrix `language_model.embed_tokens.weight`."""
        return self.lm_head.weight is self.model.language_model.embed_tokens.weight

    def freeze_non_generation_modules(self) -> None:
        """
        Freeze the modules image generation does not train: `vision_model` and `aligner` (understanding), `vqmodel`
        (the image tokenizer) and `lm_head` when it is not tied to the prompt embeddings (see the module docstring).
        """
        for module in (self.model.vision_model, self.model.aligner, self.model.vqmodel):
            module.requires_grad_(False)
        if not self.lm_head_is_tied:
            self.lm_head.requires_grad_(False)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters the optimizer should see: the generation path (`requires_grad`)."""
        return [p for p in self.parameters() if p.requires_grad]

    def set_special_token_ids(self, processing_class: Any) -> None:
        """
        Record BOS, BOI and pad ids of the tokenizer in `generation_config` (`bos_token_id`, `pad_token_id`,
        `generation_kwargs["boi_token_id"]`), where the unconditional rows and image-mode `generate` read them.
        """
        ids = janus_special_token_ids(processing_class)
        config = self.generation_config
        config.bos_token_id = ids["bos_token_id"]
        config.pad_token_id = ids["pad_token_id"]
        config.generation_kwargs = {
            **(getattr(config, "generation_kwargs", None) or {}),
            "boi_token_id": ids["boi_token_id"],
        }

    def _special_token_ids(self) -> tuple[int, int, int]:
        config = self.generation_config
        boi = (getattr(config, "generation_kwargs", None) or {}).get("boi_token_id")
        bos, pad = config.bos_token_id, config.pad_token_id
        if boi is None or bos is None or pad is None:
            raise ValueError(
                "The unconditional prompt needs the BOS, BOI and pad ids in `generation_config` (got "
                f"bos_token_id={bos}, generation_kwargs['boi_token_id']={boi}, pad_token_id={pad}); call "
                "`model.set_special_token_ids(tokenizer)` with the Janus tokenizer."
            )
        return int(bos), int(boi), int(pad)

    # ------------------------------------------------------------------ conditions

    def uncond(self, prompt_ids: torch.LongTensor) -> torch.LongTensor:
        """
        Janus' unconditional prompt: every token but BOS and BOI replaced by the pad id, `(batch_size, P)` ->
        `(batch_size, P)`. Use it with the conditional attention mask (left padding masked, replaced tokens attended),
        as image-mode `generate` does.
        """
        bos, boi, pad = self._special_token_ids()
        keep = (prompt_ids == bos) | (prompt_ids == boi)
        return torch.where(keep, prompt_ids, torch.full_like(prompt_ids, pad))

    def drop_condition(self, condition: dict[str, torch.Tensor], drop: torch.Tensor) -> dict[str, torch.Tensor]:
        """Replace the prompts of rows where `drop` `(batch_size,)` bool is set by the unconditional prompt."""
        prompt_ids = condition["prompt_ids"]
        dropped = torch.where(drop.to(prompt_ids.device)[:, None], self.uncond(prompt_ids), prompt_ids)
        return {**condition, "prompt_ids": dropped}

    # ------------------------------------------------------------------ internals

    def _check_prompt(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> None:
        if not isinstance(prompt_ids, torch.Tensor) or prompt_ids.dtype.is_floating_point or prompt_ids.dim() != 2:
            raise ValueError("`prompt_ids` must be an integer tensor of shape (batch_size, prompt_length).")
        if not isinstance(prompt_mask, torch.Tensor) or prompt_mask.shape != prompt_ids.shape:
            raise ValueError(
                f"`prompt_mask` must be a tensor shaped like `prompt_ids` {tuple(prompt_ids.shape)}, got "
                f"{tuple(prompt_mask.shape) if isinstance(prompt_mask, torch.Tensor) else type(prompt_mask).__name__}."
            )
        if prompt_ids.shape[1] == 0 or not bool(prompt_mask[:, -1].all()):
            raise ValueError(
                "Prompts must be left-padded so that `<begin_of_image>` is the last column of every row (the last "
                "column of `prompt_mask` is all ones); build them with `JanusImageGenerationProcessor`."
            )

    def _image_embeds(self, image_ids: torch.LongTensor) -> torch.Tensor:
        """Image ids `(B, L)` -> inputs for the language model `(B, L, D)` (generation embedding + aligner)."""
        return self.model.generation_aligner(self.model.generation_embeddings(image_ids))

    def _guided_logits(self, hidden_states: torch.Tensor, cfg_scale: float) -> torch.Tensor:
        return guide_batch(self.model.generation_head(hidden_states).float(), cfg_scale)

    def _with_uncond(
        self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, cfg_scale: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if cfg_scale == 1.0:
            return prompt_ids, prompt_mask
        return torch.cat((prompt_ids, self.uncond(prompt_ids))), torch.cat((prompt_mask, prompt_mask))

    # ------------------------------------------------------------------ public passes

    def forward(
        self,
        prompt_ids: torch.LongTensor | None = None,
        prompt_mask: torch.LongTensor | None = None,
        context_ids: torch.LongTensor | None = None,
        cfg_scale: float = 1.0,
        **kwargs: Any,
    ) -> JanusImageGenerationOutput:
        """
        Teacher-forced pass over all image positions in one call.

        Args:
            prompt_ids (`torch.LongTensor` of shape `(batch_size, P)`):
                Left-padded prompts ending with `<begin_of_image>` (from `JanusImageGenerationProcessor`).
            prompt_mask (`torch.LongTensor` of shape `(batch_size, P)`):
                1 for prompt tokens, 0 for left padding.
            context_ids (`torch.LongTensor` of shape `(batch_size, num_image_tokens - 1)`, *optional*):
                Image ids in `[0, codebook_size)` fed as inputs (the first N−1 tokens, possibly corrupted). `None` or
                length 0 runs the prompt alone.
            cfg_scale (`float`, *optional*, defaults to `1.0`):
                Classifier-free guidance scale. When `!= 1`, the unconditional rows (`uncond`) run in the same 2B batch
                and the output is `u + cfg_scale * (c - u)`; gradients flow through both branches.
            kwargs:
                Without `prompt_ids`, all arguments go to `JanusForConditionalGeneration.forward` (text/understanding).

        Returns:
            `JanusImageGenerationOutput` with `logits` `(batch_size, num_image_tokens, codebook_size)` in fp32 (or
            `(batch_size, 1, codebook_size)` without context): index `t` predicts image token `t` from the prompt and
            `context_ids[:, :t]`.
        """
        if prompt_ids is None:
            if prompt_mask is not None or context_ids is not None:
                raise ValueError("The teacher-forced image pass needs `prompt_ids` with `prompt_mask`/`context_ids`.")
            return super().forward(**kwargs)
        if kwargs:
            raise TypeError(f"Unexpected arguments {sorted(kwargs)} for the teacher-forced image pass.")
        self._check_prompt(prompt_ids, prompt_mask)
        batch_size, prompt_length = prompt_ids.shape
        expected = self.num_image_tokens - 1
        if context_ids is None:
            context_ids = prompt_ids.new_zeros((batch_size, 0))
        check_context_ids(context_ids, batch_size, expected, "the prompt")
        prompt_ids, prompt_mask = self._with_uncond(prompt_ids, prompt_mask, cfg_scale)
        if cfg_scale != 1.0:
            context_ids = torch.cat((context_ids, context_ids))
        embed_tokens = self.model.language_model.get_input_embeddings()
        inputs_embeds = torch.cat((embed_tokens(prompt_ids), self._image_embeds(context_ids)), dim=1)
        attention_mask = torch.cat((prompt_mask, prompt_mask.new_ones(context_ids.shape)), dim=1)
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        hidden = self.model.language_model(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        ).last_hidden_state
        return JanusImageGenerationOutput(logits=self._guided_logits(hidden[:, prompt_length - 1 :], cfg_scale))

    def _start_decoding(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, cfg_scale: float):
        """
        Run the prompts into a fresh cache. Returns the logits of image token 0 `(B, K)` and `step(image_ids, index)`,
        which feeds one image token per row `(B,)` (growing the mask, positions following it) and returns the next
        logits `(B, K)`.
        """
        self._check_prompt(prompt_ids, prompt_mask)
        prompt_ids, prompt_mask = self._with_uncond(prompt_ids, prompt_mask, cfg_scale)
        cache = DynamicCache(config=self.config.text_config)
        position_ids = (prompt_mask.cumsum(-1) - 1).clamp(min=0)
        hidden = self.model.language_model(
            inputs_embeds=self.model.language_model.get_input_embeddings()(prompt_ids),
            attention_mask=prompt_mask,
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=True,
        ).last_hidden_state
        mask, position = prompt_mask, position_ids[:, -1:] + 1

        def step(image_ids: torch.Tensor, index: int) -> torch.Tensor:
            nonlocal mask, position
            if cfg_scale != 1.0:
                image_ids = torch.cat((image_ids, image_ids))
            mask = torch.cat((mask, mask.new_ones((mask.shape[0], 1))), dim=1)
            hidden = self.model.language_model(
                inputs_embeds=self._image_embeds(image_ids[:, None]),
                attention_mask=mask,
                position_ids=position,
                past_key_values=cache,
                use_cache=True,
            ).last_hidden_state
            position = position + 1
            return self._guided_logits(hidden[:, -1], cfg_scale)

        return self._guided_logits(hidden[:, -1], cfg_scale), step

    @torch.no_grad()
    def stepwise_logits(
        self,
        prompt_ids: torch.LongTensor,
        prompt_mask: torch.LongTensor,
        image_ids: torch.LongTensor,
        cfg_scale: float = 1.0,
    ) -> torch.Tensor:
        """
        KV-cache decoding fed with given ids, one token per step: the incremental counterpart of `forward`, for checks.

        Args:
            prompt_ids, prompt_mask (`torch.LongTensor` of shape `(batch_size, P)`): as in `forward`.
            image_ids (`torch.LongTensor` of shape `(batch_size, length)`): ids fed in order, `length <= N - 1`.
            cfg_scale (`float`, *optional*, defaults to `1.0`): guidance scale, as in `forward`.

        Returns:
            `torch.FloatTensor` of shape `(batch_size, length + 1, codebook_size)`: step `t` predicts image token `t`.
        """
        if image_ids.dim() != 2 or image_ids.shape[0] != prompt_ids.shape[0]:
            raise ValueError(
                f"`image_ids` must have shape ({prompt_ids.shape[0]}, length), got {tuple(image_ids.shape)}."
            )
        return feed_with_cache(*self._start_decoding(prompt_ids, prompt_mask, cfg_scale), image_ids)

    @torch.no_grad()
    def sample(
        self,
        prompt_ids: torch.LongTensor,
        prompt_mask: torch.LongTensor,
        cfg_scale: float = 5.0,
        **sampling: Unpack[SamplingKwargs],
    ) -> torch.LongTensor:
        """
        Free-running autoregressive image generation with a KV cache (evaluation sampling): CFG, then temperature,
        top-k, top-p. Equals image-mode `generate` for unpadded prompts; with left padding the positions follow the
        mask (`cumsum - 1`), so a padded row generates as it would alone.

        Args:
            prompt_ids, prompt_mask (`torch.LongTensor` of shape `(batch_size, P)`): from `JanusImageGenerationProcessor`.
            cfg_scale (`float`, *optional*, defaults to `5.0`): guidance scale (GenEval protocol: 5); 1 disables CFG.
            sampling: `temperature`, `top_k`, `top_p`, `generator`, `greedy` (`vapi_trl.sampling.SamplingKwargs`).

        Returns:
            `torch.LongTensor` of shape `(batch_size, num_image_tokens)`: codebook ids, raster order.
        """
        draw = token_sampler(**sampling)
        start = self._start_decoding(prompt_ids, prompt_mask, cfg_scale)
        return sample_with_cache(*start, self.num_image_tokens, draw)

    @torch.no_grad()
    def decode_ids(self, image_ids: torch.LongTensor) -> torch.FloatTensor:
        """Codebook ids `(B, N)` -> pixels `(B, 3, H, W)`, ≈[-1, 1], unclamped, through the in-model VQ decoder."""
        return self.model.vqmodel.decode(image_ids)


__all__ = ["JanusForImageGeneration", "JanusImageGenerationOutput"]
