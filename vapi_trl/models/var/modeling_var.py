"""
VAR class-to-image transformer (FoundationVision/VAR, MIT: `models/var.py`, `models/basic_var.py`) as a VA-π policy.

Parameter names equal the official ones (`class_emb`, `pos_start`, `pos_1LC`, `lvl_embed`, `word_embed`,
`blocks.i.{attn,ffn,ada_lin}`, `head_nm`, `head`), so `var_d*.pth` loads without renames. The official buffers
`lvl_1L`, `attn_bias_for_masking` and `blocks.i.attn.zero_k_bias` are derived from `patch_nums` (or are zeros): the
converter checks them and drops them, and this module recomputes them.

The policy also holds `quantize`, a FROZEN copy of the tokenizer's code embedding and Phi convs
(`VARVectorQuantizer(usage_buffer=False)`): the transformer's input for scale k is the running residual sum of scales
< k, which has to be rebuilt from the (possibly corrupted) context ids inside `forward`. Keeping the copy inside the
policy makes `save_pretrained`/`from_pretrained` self-contained; it has `requires_grad=False`, so the optimizer (which
takes parameters) never sees it: its tensors are registered as buffers under the official names, and the quantizer
computes in fp32 whatever the model dtype.
"""

import math

from typing_extensions import Unpack

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer

from ...sampling import SamplingKwargs, token_sampler
from .configuration_var import VARConfig
from ..modeling_utils import (
    ClassConditionMixin,
    ImageTokenLogitsOutput,
    ImageTokenPolicyMixin,
    StrictLoadingMixin,
    check_context_ids,
)
from .modeling_var_vqvae import VARVectorQuantizer
from .processing_var import VARProcessor


def scale_levels(patch_nums: list[int], device: torch.device | None = None) -> torch.LongTensor:
    """Scale index of every flat position: `(L,)` int64, e.g. `[0, 1, 1, 1, 1, 2, ...]` (official `lvl_1L[0]`)."""
    return torch.cat([torch.full((pn * pn,), k, dtype=torch.long, device=device) for k, pn in enumerate(patch_nums)])


def block_causal_mask(patch_nums: list[int], device: torch.device | None = None) -> torch.Tensor:
    """`(L, L)` bool, True where query position i may attend key j: scale(j) <= scale(i) (official
    `attn_bias_for_masking == 0`)."""
    levels = scale_levels(patch_nums, device)
    return levels[:, None] >= levels[None, :]


def cfg_ramp(cfg_scale: float, num_scales: int) -> list[float]:
    """
    VAR's per-scale guidance weights `t_k = (cfg_scale − 1)·k/(S−1)`, k = 0..S−1; guided logits at scale k are
    `(1 + t_k)·c − t_k·u` (VAR's `cfg` = `cfg_scale − 1`; `cfg_scale = 1` gives no guidance at any scale).
    """
    return [(cfg_scale - 1.0) * k / (num_scales - 1) for k in range(num_scales)]


def _parameters_to_buffers(module: nn.Module) -> None:
    """Re-register every parameter of `module` as a persistent buffer of the same name.

    The policy's quantizer copy must stay frozen: buffers keep their state-dict names (`quantize.embedding.weight`),
    are saved and loaded with the model, follow `.to()`, and are never returned by `parameters()`, so no optimizer,
    DDP gradient reduction, PEFT wrapper or `from_pretrained` (which re-creates parameters with `requires_grad=True`)
    can make them trainable.
    """
    for submodule in module.modules():
        for name, parameter in list(submodule._parameters.items()):
            if parameter is not None:
                del submodule._parameters[name]
                submodule.register_buffer(name, parameter.detach())


class VARSelfAttention(nn.Module):
    """
    VAR's attention: fused bias-free `mat_qkv` plus `q_bias`/`v_bias` (k has no bias), then either cosine attention
    with a learned per-head scale (`attn_l2_norm`) or dot products scaled by `0.25/sqrt(head_dim)`.
    """

    def __init__(self, config: VARConfig) -> None:
        super().__init__()
        dim = config.hidden_size
        self.num_heads, self.head_dim = config.num_attention_heads, dim // config.num_attention_heads
        self.attn_l2_norm = config.attn_l2_norm
        if self.attn_l2_norm:
            self.scale = 1.0
            self.scale_mul_1H11 = nn.Parameter(torch.full((1, self.num_heads, 1, 1), math.log(4.0)))
            self.max_scale_mul = math.log(100.0)
        else:
            self.scale = 0.25 / self.head_dim**0.5
        self.mat_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        kv_cache: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """
        Args:
            hidden_states (`torch.Tensor` of shape `(B, l, C)`): normalised and modulated input.
            attn_mask (`torch.BoolTensor` of shape `(l, l)`, *optional*): True = attend (teacher forcing).
            kv_cache (`list`, *optional*): `[k, v]` of earlier scales, extended in place (scale-by-scale sampling; the
                new scale attends to everything cached and to itself, so no mask is needed).
        """
        batch, length, dim = hidden_states.shape
        bias = torch.cat((self.q_bias, torch.zeros_like(self.q_bias), self.v_bias))
        qkv = F.linear(hidden_states, self.mat_qkv.weight, bias.to(self.mat_qkv.weight.dtype))
        q, k, v = qkv.view(batch, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if self.attn_l2_norm:
            scale_mul = self.scale_mul_1H11.clamp_max(self.max_scale_mul).exp()
            q = F.normalize(q, dim=-1).mul(scale_mul).to(v.dtype)
            k = F.normalize(k, dim=-1).to(v.dtype)
        if kv_cache is not None:
            if kv_cache:
                k, v = torch.cat((kv_cache[0], k), dim=2), torch.cat((kv_cache[1], v), dim=2)
            kv_cache[:] = [k, v]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(batch, length, dim))


class VARFFN(nn.Module):
    """`fc2(gelu_tanh(fc1(x)))`."""

    def __init__(self, config: VARConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class VARAdaLNSelfAttn(GradientCheckpointingLayer):
    """
    VAR block: `x + γ1·attn(LN(x)·(1+s1) + b1)`, then `x + γ2·ffn(LN(x)·(1+s2) + b2)`, where `(γ1, γ2, s1, s2, b1,
    b2)` come from the class embedding through `ada_lin` (or `ada_gss` + the shared projection with `shared_aln`).
    """

    def __init__(self, config: VARConfig) -> None:
        super().__init__()
        dim = config.hidden_size
        self.hidden_size = dim
        self.attn = VARSelfAttention(config)
        self.ffn = VARFFN(config)
        self.ln_wo_grad = nn.LayerNorm(dim, eps=config.norm_eps, elementwise_affine=False)
        self.shared_aln = config.shared_aln
        if self.shared_aln:
            self.ada_gss = nn.Parameter(torch.randn(1, 1, 6, dim) / dim**0.5)
        else:
            self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(
        self,
        hidden_states: torch.Tensor,
        condition: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        kv_cache: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """
        Args:
            hidden_states (`torch.Tensor` of shape `(B, l, C)`).
            condition (`torch.Tensor`): class embedding `(B, C)`, or with `shared_aln` the shared projection
                `(B, 1, 6, C)`.
            attn_mask, kv_cache: see `VARSelfAttention.forward`.
        """
        if self.shared_aln:
            modulation = self.ada_gss + condition
        else:
            modulation = self.ada_lin(condition).view(-1, 1, 6, self.hidden_size)
        gamma1, gamma2, scale1, scale2, shift1, shift2 = modulation.unbind(2)
        attn_in = self.ln_wo_grad(hidden_states).mul(scale1 + 1).add(shift1)
        hidden_states = hidden_states + self.attn(attn_in, attn_mask=attn_mask, kv_cache=kv_cache).mul(gamma1)
        ffn_in = self.ln_wo_grad(hidden_states).mul(scale2 + 1).add(shift2)
        return hidden_states + self.ffn(ffn_in).mul(gamma2)


class VARAdaLNBeforeHead(nn.Module):
    """Final AdaLN: `LN(x)·(1+s) + b` with `(s, b) = ada_lin(class embedding)`."""

    def __init__(self, config: VARConfig) -> None:
        super().__init__()
        self.hidden_size = config.hidden_size
        self.ln_wo_grad = nn.LayerNorm(config.hidden_size, eps=config.norm_eps, elementwise_affine=False)
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(config.hidden_size, 2 * config.hidden_size))

    def forward(self, hidden_states: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        scale, shift = self.ada_lin(condition).view(-1, 1, 2, self.hidden_size).unbind(2)
        return self.ln_wo_grad(hidden_states).mul(scale + 1).add(shift)


class VARSharedAdaLin(nn.Linear):
    """`shared_aln`: one projection of the class embedding `(B, C)` → `(B, 1, 6, C)` shared by all blocks."""

    def forward(self, condition: torch.Tensor) -> torch.Tensor:
        return super().forward(condition).view(-1, 1, 6, self.weight.shape[0] // 6)


# The shared logits-only output; the family name is kept for code that imports it.
VAROutput = ImageTokenLogitsOutput


class VARPreTrainedModel(StrictLoadingMixin, PreTrainedModel):
    """Base class: weight init, gradient checkpointing of `VARAdaLNSelfAttn` blocks, strict loading."""

    config: VARConfig
    base_model_prefix = "var"
    supports_gradient_checkpointing = True
    _no_split_modules = ["VARAdaLNSelfAttn"]
    _keep_in_fp32_modules = ["quantize"]
    _supports_sdpa = True
    _conversion_hint = "convert official checkpoints with `vapi-trl convert-var`"

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, VARForClassToImage):
            init.normal_(module.pos_start, mean=0.0, std=std)
            init.normal_(module.pos_1LC, mean=0.0, std=std)
        elif isinstance(module, VARSelfAttention):
            init.zeros_(module.q_bias)
            init.zeros_(module.v_bias)
            if module.attn_l2_norm:
                init.constant_(module.scale_mul_1H11, math.log(4.0))
        elif isinstance(module, VARAdaLNSelfAttn) and module.shared_aln:
            init.normal_(module.ada_gss, mean=0.0, std=std)


class VARForClassToImage(ClassConditionMixin, ImageTokenPolicyMixin, VARPreTrainedModel):
    """
    VAR C2I (next-scale prediction) as a VA-π policy.

    `forward` is VAR's teacher-forced training pass over all L = `sum(pn²)` positions, its continuous input built from
    context ids through the frozen `quantize` copy; `sample` is VAR's scale-by-scale sampler with a KV cache;
    `stepwise_logits` runs that sampler on given ids (checks). Row `num_classes` of `class_emb` is the null class.
    Within a scale VAR draws every token independently given the earlier scales, so drawing every position of one
    teacher-forced pass is exactly VAR's sampler with the ground-truth prefix.

    Note: official VAR initialises the AdaLN gains near zero and shrinks the head for training from scratch; here every
    weight follows the generic normal init, since the model is post-trained from checkpoints and near-identity blocks
    make random test models degenerate.
    """

    # Turns dataset rows into `class_labels`.
    processor_class = VARProcessor

    def __init__(self, config: VARConfig) -> None:
        super().__init__(config)
        dim, patch_nums = config.hidden_size, config.patch_nums
        self.first_l = patch_nums[0] ** 2
        self.word_embed = nn.Linear(config.vae_embed_dim, dim)
        self.class_emb = nn.Embedding(config.num_classes + 1, dim)
        self.pos_start = nn.Parameter(torch.zeros(1, self.first_l, dim))
        self.pos_1LC = nn.Parameter(torch.zeros(1, config.num_image_tokens, dim))
        self.lvl_embed = nn.Embedding(len(patch_nums), dim)
        self.shared_ada_lin = (
            nn.Sequential(nn.SiLU(), VARSharedAdaLin(dim, 6 * dim)) if config.shared_aln else nn.Identity()
        )
        self.blocks = nn.ModuleList([VARAdaLNSelfAttn(config) for _ in range(config.num_hidden_layers)])
        self.head_nm = VARAdaLNBeforeHead(config)
        self.head = nn.Linear(dim, config.vocab_size)
        self.quantize = VARVectorQuantizer(
            config.vocab_size,
            config.vae_embed_dim,
            patch_nums,
            quant_resi=config.quant_resi,
            share_quant_resi=config.share_quant_resi,
            default_qresi_counts=config.default_qresi_counts,
            usage_buffer=False,
        )
        self.gradient_checkpointing = False
        self._ensure_generation_config()
        _parameters_to_buffers(self.quantize)
        self.post_init()

    # ------------------------------------------------------------------ sizes and conditions

    @property
    def num_image_tokens(self) -> int:
        """Tokens per image L = `sum(pn²)` (680 at 256²)."""
        return self.config.num_image_tokens

    @property
    def patch_nums(self) -> list[int]:
        """Token-map side per scale, coarse to fine."""
        return list(self.config.patch_nums)

    def get_input_embeddings(self) -> nn.Module:
        """`word_embed`, the projection of the continuous scale inputs (hooks for input gradients attach here)."""
        return self.word_embed

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.word_embed = value

    # ------------------------------------------------------------------ internals

    def _level_position(self, device: torch.device) -> torch.Tensor:
        """`lvl_embed(scale of each position) + pos_1LC`: `(1, L, C)` fp32."""
        levels = scale_levels(self.patch_nums, device)
        return self.lvl_embed(levels).float().unsqueeze(0) + self.pos_1LC.float()

    def _start_tokens(self, condition: torch.Tensor, level_position: torch.Tensor) -> torch.Tensor:
        """First scale's input: class embedding + `pos_start` + level/position, `(B, first_l, C)` fp32."""
        batch = condition.shape[0]
        return (
            condition.float().unsqueeze(1).expand(batch, self.first_l, -1)
            + self.pos_start.float().expand(batch, -1, -1)
            + level_position[:, : self.first_l]
        )

    def _blocks(
        self,
        hidden_states: torch.Tensor,
        condition: torch.Tensor,
        attn_mask: torch.Tensor | None,
        kv_caches: list[list[torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        block_condition = self.shared_ada_lin(condition)
        for index, block in enumerate(self.blocks):
            cache = None if kv_caches is None else kv_caches[index]
            hidden_states = block(hidden_states, block_condition, attn_mask=attn_mask, kv_cache=cache)
        return hidden_states

    def _logits(self, hidden_states: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        # The official head runs on fp32 inputs (`head(head_nm(h.float(), cond).float()).float()`); casting to the
        # head's dtype is the same for fp32 weights and keeps a bf16-cast model usable without autocast.
        dtype = self.head.weight.dtype
        return self.head(self.head_nm(hidden_states.to(dtype), condition.to(dtype))).float()

    def _guide(self, logits: torch.Tensor, weights: torch.Tensor | float) -> torch.Tensor:
        """Cond/uncond halves of a 2B batch → `(1 + t)·c − t·u` with `t` a float or broadcastable `(l, 1)` tensor."""
        cond, uncond = logits.chunk(2, dim=0)
        return (1 + weights) * cond - weights * uncond

    # ------------------------------------------------------------------ public passes

    def build_var_input(self, context_ids: torch.LongTensor) -> torch.Tensor:
        """
        The continuous teacher-forcing input (`idxBl_to_var_input`) from context ids through the frozen quantizer.

        Args:
            context_ids (`torch.LongTensor` of shape `(batch_size, l)`, `l >= L − patch_nums[-1]²`): flat ids; only the
                first `L − patch_nums[-1]²` (scales 0..S−2) are read.

        Returns:
            `torch.FloatTensor` of shape `(batch_size, L − patch_nums[0]², vae_embed_dim)`, fp32, no gradient.
        """
        with torch.no_grad(), torch.autocast(context_ids.device.type, enabled=False):
            return self.quantize.idxBl_to_var_input(context_ids)

    def forward(
        self,
        class_labels: torch.LongTensor,
        context_ids: torch.LongTensor,
        cfg_scale: float = 1.0,
    ) -> VAROutput:
        """
        Teacher-forced pass over all L positions in one call (VAR's training forward, no label dropout).

        Args:
            class_labels (`torch.LongTensor` of shape `(batch_size,)`):
                Classes in `[0, num_classes)`; `num_classes` is the null class.
            context_ids (`torch.LongTensor` of shape `(batch_size, num_image_tokens − 1)`):
                Flat ids in `[0, vocab_size)` (possibly corrupted). Scale k's input is rebuilt from the ids of scales
                < k, so only the first `L − patch_nums[-1]²` ids matter.
            cfg_scale (`float`, *optional*, defaults to `1.0`):
                Guidance at the last scale; scale k gets `(1 + t_k)·c − t_k·u` with `t_k = (cfg_scale − 1)·k/(S−1)`
                (VAR's ramp with `cfg = cfg_scale − 1`). When `!= 1`, null-class rows run in the same 2B batch.

        Returns:
            `VAROutput` with `logits` `(batch_size, num_image_tokens, vocab_size)` fp32.
        """
        self._check_class_labels(class_labels)
        check_context_ids(context_ids, class_labels.shape[0], self.num_image_tokens - 1)
        if cfg_scale != 1.0:
            class_labels = torch.cat((class_labels, self.uncond(class_labels)))
            context_ids = torch.cat((context_ids, context_ids))
        device = context_ids.device
        var_input = self.build_var_input(context_ids)
        # Embeddings in fp32 outside autocast, as the official forward.
        with torch.autocast(device.type, enabled=False):
            condition = self.class_emb(class_labels).float()
            level_position = self._level_position(device)
            hidden_states = torch.cat(
                (
                    self._start_tokens(condition, level_position),
                    self.word_embed(var_input.to(self.word_embed.weight.dtype)).float()
                    + level_position[:, self.first_l :],
                ),
                dim=1,
            )
        dtype = self.word_embed.weight.dtype if not torch.is_autocast_enabled(device.type) else hidden_states.dtype
        hidden_states = self._blocks(
            hidden_states.to(dtype), condition.to(dtype), attn_mask=block_causal_mask(self.patch_nums, device)
        )
        logits = self._logits(hidden_states, condition)
        if cfg_scale != 1.0:
            weights = torch.tensor(cfg_ramp(cfg_scale, len(self.patch_nums)), device=device)
            logits = self._guide(logits, weights[scale_levels(self.patch_nums, device)].unsqueeze(-1))
        return VAROutput(logits=logits)

    @torch.no_grad()
    def _scale_by_scale(
        self,
        class_labels: torch.LongTensor,
        cfg_scale: float,
        choose,
    ) -> tuple[torch.LongTensor, torch.Tensor]:
        """VAR's `autoregressive_infer_cfg` loop with a KV cache; `choose(k, logits (B, pn_k², V))` returns the ids of
        scale k. Returns the flat ids `(B, L)` and the guided logits `(B, L, V)`."""
        self._check_class_labels(class_labels)
        batch, device = class_labels.shape[0], class_labels.device
        guided = cfg_scale != 1.0
        labels = torch.cat((class_labels, self.uncond(class_labels))) if guided else class_labels
        weights = cfg_ramp(cfg_scale, len(self.patch_nums))
        dtype = self.word_embed.weight.dtype
        condition = self.class_emb(labels).float()
        level_position = self._level_position(device)
        hidden_states = self._start_tokens(condition, level_position)
        side = self.patch_nums[-1]
        f_hat = torch.zeros(batch, self.config.vae_embed_dim, side, side, device=device)
        caches: list[list[torch.Tensor]] = [[] for _ in self.blocks]
        ids, logits_per_scale, start = [], [], 0
        for index, pn in enumerate(self.patch_nums):
            out = self._blocks(hidden_states.to(dtype), condition.to(dtype), attn_mask=None, kv_caches=caches)
            logits = self._logits(out, condition)
            if guided:
                logits = self._guide(logits, weights[index])
            scale_ids = choose(index, logits)
            ids.append(scale_ids)
            logits_per_scale.append(logits)
            start += pn * pn
            with torch.autocast(device.type, enabled=False):
                f_hat, next_input = self.quantize.next_autoregressive_input(index, f_hat, scale_ids)
                if next_input is not None:
                    next_l = self.patch_nums[index + 1] ** 2
                    hidden_states = self.word_embed(next_input.to(dtype)).float()
                    hidden_states = hidden_states + level_position[:, start : start + next_l]
                    if guided:
                        hidden_states = hidden_states.repeat(2, 1, 1)
        return torch.cat(ids, dim=1), torch.cat(logits_per_scale, dim=1)

    @torch.no_grad()
    def stepwise_logits(
        self, class_labels: torch.LongTensor, image_ids: torch.LongTensor, cfg_scale: float = 1.0
    ) -> torch.Tensor:
        """
        VAR's scale-by-scale sampler (KV cache, `get_next_autoregressive_input`) fed with given ids instead of draws:
        the incremental counterpart of `forward`, for checks.

        Args:
            class_labels (`torch.LongTensor` of shape `(batch_size,)`): classes, as in `forward`.
            image_ids (`torch.LongTensor` of shape `(batch_size, num_image_tokens)`): flat ids fed scale by scale.
            cfg_scale (`float`, *optional*, defaults to `1.0`): guidance, as in `forward`.

        Returns:
            `torch.FloatTensor` of shape `(batch_size, num_image_tokens, vocab_size)`: the sampler's logits.
        """
        if image_ids.dim() != 2 or tuple(image_ids.shape) != (class_labels.shape[0], self.num_image_tokens):
            raise ValueError(
                f"`image_ids` must have shape ({class_labels.shape[0]}, {self.num_image_tokens}), got "
                f"{tuple(image_ids.shape)}."
            )
        maps = self.quantize.split_scales(image_ids)
        return self._scale_by_scale(class_labels, cfg_scale, lambda index, logits: maps[index])[1]

    @torch.no_grad()
    def sample(
        self,
        class_labels: torch.LongTensor,
        cfg_scale: float = 1.0,
        **sampling: Unpack[SamplingKwargs],
    ) -> torch.LongTensor:
        """
        Free-running next-scale sampling (VAR's `autoregressive_infer_cfg`, `more_smooth=False`): each scale's tokens
        are drawn independently from the guided logits given the earlier scales.

        VAR's FID protocol is `cfg_scale=2.5, top_k=900, top_p=0.96` in this convention (`VAR_FID_SAMPLING`; VAR's
        `cfg=1.5`). The filters keep exactly `top_k` codes (VAR keeps ties at the k-th value) and the smallest nucleus
        of mass `top_p` (VAR's rule).

        Args:
            class_labels (`torch.LongTensor` of shape `(batch_size,)`): classes in `[0, num_classes]`.
            cfg_scale (`float`, *optional*, defaults to `1.0`): guidance at the last scale (see `forward`).
            sampling: `temperature`, `top_k`, `top_p`, `generator`, `greedy` (`vapi_trl.sampling.SamplingKwargs`).

        Returns:
            `torch.LongTensor` of shape `(batch_size, num_image_tokens)`: flat ids in `[0, vocab_size)`, coarse first.
        """
        draw = token_sampler(**sampling)
        return self._scale_by_scale(class_labels, cfg_scale, lambda index, logits: draw(logits))[0]


__all__ = [
    "VARAdaLNBeforeHead",
    "VARAdaLNSelfAttn",
    "VARForClassToImage",
    "VAROutput",
    "VARPreTrainedModel",
    "VARSelfAttention",
    "block_causal_mask",
    "cfg_ramp",
    "scale_levels",
]
