"""Model-agnostic pieces of image-token sampling: classifier-free guidance, top-k/top-p filtering, drawing ids.

The training objective imports the same `top_k_top_p_filter`, so that the log-probs of the loss pass come from the
distribution the tokens were drawn from (see `algorithm.md` §5, "top-k/top-p ratio").
"""

from collections.abc import Callable
from typing import TypedDict

import torch


def check_sampling_filters(top_k: int, top_p: float) -> None:
    """Raise a `ValueError` unless `top_k >= 0` (0 disables it) and `top_p` lies in (0, 1] (1.0 disables it)."""
    if top_k < 0:
        raise ValueError(f"`top_k` must be >= 0 (0 disables it), got {top_k}.")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"`top_p` must lie in (0, 1] (1.0 disables it), got {top_p}.")


def check_temperature(temperature: float, hint: str = "") -> None:
    """Raise a `ValueError` (ending with `hint`) unless the sampling `temperature` is > 0."""
    if temperature <= 0:
        raise ValueError(f"`temperature` must be > 0 when sampling, got {temperature}.{hint}")


def top_k_top_p_filter(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """
    Mask the logits outside the top-k set and outside the top-p nucleus with `-inf`.

    Args:
        logits (`torch.Tensor` of shape `(..., vocab_size)`):
            Unnormalised scores, any leading shape, any float dtype. Apply the temperature before calling: the nucleus
            is taken on `softmax(logits)`.
        top_k (`int`, *optional*, defaults to `0`):
            Keep exactly the `top_k` highest logits per row (ties broken by `torch.topk`); `0` disables it. Values
            `>= vocab_size` keep everything.
        top_p (`float`, *optional*, defaults to `1.0`):
            Keep the smallest set of highest-probability entries whose probability mass reaches `top_p` (the entry
            that crosses the threshold is kept, and so is the top entry); `1.0` disables it. Must lie in `(0, 1]`.

    Returns:
        `torch.Tensor` of the same shape and dtype: the filtered logits (a new tensor; the input is not modified), or
        the input object itself when `top_k == 0` and `top_p == 1.0`. Differentiable in the kept entries.
    """
    check_sampling_filters(top_k, top_p)
    vocab_size = logits.shape[-1]
    remove = None
    if 0 < top_k < vocab_size:
        keep = torch.zeros_like(logits, dtype=torch.bool)
        keep.scatter_(-1, torch.topk(logits, top_k, dim=-1).indices, True)
        remove = ~keep
    if top_p < 1.0:
        masked = logits if remove is None else logits.masked_fill(remove, float("-inf"))
        sorted_logits, sorted_idx = torch.sort(masked.detach().float(), dim=-1, descending=True)
        cum_probs = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # An entry goes once the mass ranked above it already reaches top_p (official LlamaGen's shifted `>` rule,
        # with `>=` so that the nucleus is the smallest one; the two differ only at exact equality).
        sorted_remove = torch.zeros_like(cum_probs, dtype=torch.bool)
        sorted_remove[..., 1:] = cum_probs[..., :-1] >= top_p
        nucleus_remove = sorted_remove.scatter(-1, sorted_idx, sorted_remove)
        remove = nucleus_remove if remove is None else remove | nucleus_remove
    if remove is None:
        return logits
    return logits.masked_fill(remove, float("-inf"))


def apply_cfg(cond_logits: torch.Tensor, uncond_logits: torch.Tensor, scale: float) -> torch.Tensor:
    """
    Classifier-free guidance `u + scale * (c - u)`.

    Args:
        cond_logits (`torch.Tensor` of shape `(..., vocab_size)`): logits under the condition.
        uncond_logits (`torch.Tensor` of the same shape): logits under the null condition.
        scale (`float`): guidance scale; `1.0` gives `cond_logits` (up to rounding), `0.0` gives `uncond_logits`.

    Returns:
        `torch.Tensor` of the same shape: the guided logits.
    """
    if cond_logits.shape != uncond_logits.shape:
        raise ValueError(
            f"`cond_logits` {tuple(cond_logits.shape)} and `uncond_logits` {tuple(uncond_logits.shape)} must have the "
            "same shape."
        )
    return uncond_logits + scale * (cond_logits - uncond_logits)


def sample_tokens(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    greedy: bool = False,
) -> torch.Tensor:
    """
    Draw one id per row from `softmax(top_k_top_p_filter(logits / temperature))`, or take the argmax.

    Args:
        logits (`torch.Tensor` of shape `(..., vocab_size)`): unnormalised scores, any leading shape.
        temperature (`float`, *optional*, defaults to `1.0`): divides the logits before filtering; must be `> 0`
            unless `greedy`.
        top_k (`int`, *optional*, defaults to `0`): see `top_k_top_p_filter`.
        top_p (`float`, *optional*, defaults to `1.0`): see `top_k_top_p_filter`.
        generator (`torch.Generator`, *optional*): RNG on the logits' device, for reproducible draws.
        greedy (`bool`, *optional*, defaults to `False`): return `argmax(logits)` (temperature and filters ignored).

    Returns:
        `torch.LongTensor` of shape `(...)`: ids in `[0, vocab_size)`.
    """
    if greedy:
        return logits.argmax(dim=-1)
    check_temperature(temperature, hint=" Pass `greedy=True` for argmax.")
    filtered = top_k_top_p_filter(logits.float() / temperature, top_k=top_k, top_p=top_p)
    probs = filtered.softmax(dim=-1)
    ids = torch.multinomial(probs.reshape(-1, probs.shape[-1]), num_samples=1, generator=generator)
    return ids.reshape(probs.shape[:-1])


def guide_batch(logits: torch.Tensor, cfg_scale: float) -> torch.Tensor:
    """
    Classifier-free guidance of a batch that stacks the conditional rows over the unconditional ones.

    Args:
        logits (`torch.Tensor` of shape `(2 * batch_size, ..., vocab_size)`, or `(batch_size, ..., vocab_size)` when
            `cfg_scale == 1`): conditional rows first, then the unconditional rows in the same order.
        cfg_scale (`float`): guidance scale; `1.0` means the batch has no unconditional half and is returned as is.

    Returns:
        `torch.Tensor` of shape `(batch_size, ..., vocab_size)`: `apply_cfg(cond, uncond, cfg_scale)`, or `logits`.
    """
    if cfg_scale == 1.0:
        return logits
    cond, uncond = logits.chunk(2, dim=0)
    return apply_cfg(cond, uncond, cfg_scale)


class SamplingKwargs(TypedDict, total=False):
    """
    The sampling settings every policy's `sample(**condition, cfg_scale, **sampling)` takes after the guidance scale,
    bound by `token_sampler`.

    Attributes:
        temperature (`float`, defaults to `1.0`): softmax temperature, `> 0` unless `greedy`.
        top_k (`int`, defaults to `0`): top-k filter, `0` disables it.
        top_p (`float`, defaults to `1.0`): nucleus filter, `1.0` disables it.
        generator (`torch.Generator`, *optional*): RNG on the model's device.
        greedy (`bool`, defaults to `False`): take the argmax at every step.
    """

    temperature: float
    top_k: int
    top_p: float
    generator: torch.Generator | None
    greedy: bool


def token_sampler(
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    greedy: bool = False,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """`sample_tokens` with its settings bound: returns `draw(logits) -> ids` (arguments as in `sample_tokens`)."""

    def draw(logits: torch.Tensor) -> torch.Tensor:
        return sample_tokens(logits, temperature, top_k, top_p, generator=generator, greedy=greedy)

    return draw


def sample_with_cache(
    first_logits: torch.Tensor,
    step: Callable[[torch.Tensor, int], torch.Tensor],
    num_tokens: int,
    draw: Callable[[torch.Tensor], torch.Tensor],
) -> torch.LongTensor:
    """
    Free-running token-by-token decoding: draw token 0 from `first_logits`, feed it, draw token 1, and so on.

    Args:
        first_logits (`torch.Tensor` of shape `(batch_size, vocab_size)`): logits of token 0 (after the prefill).
        step (`Callable`): `step(ids, index)` feeds token `index` `(batch_size,)` (e.g. into a KV cache) and returns
            the logits of token `index + 1`.
        num_tokens (`int`): how many tokens to draw.
        draw (`Callable`): logits -> ids, e.g. from `token_sampler`.

    Returns:
        `torch.LongTensor` of shape `(batch_size, num_tokens)`.
    """
    tokens = [draw(first_logits)]
    for index in range(num_tokens - 1):
        tokens.append(draw(step(tokens[-1], index)))
    return torch.stack(tokens, dim=1)


def feed_with_cache(
    first_logits: torch.Tensor, step: Callable[[torch.Tensor, int], torch.Tensor], ids: torch.LongTensor
) -> torch.Tensor:
    """
    Token-by-token decoding fed with given ids instead of draws (the counterpart of `sample_with_cache`, for checks).

    Args:
        first_logits (`torch.Tensor` of shape `(batch_size, vocab_size)`): logits of token 0.
        step (`Callable`): as in `sample_with_cache`.
        ids (`torch.LongTensor` of shape `(batch_size, length)`): ids fed in order.

    Returns:
        `torch.Tensor` of shape `(batch_size, length + 1, vocab_size)`: step `t` predicts token `t`.
    """
    steps = [first_logits]
    for index in range(ids.shape[1]):
        steps.append(step(ids[:, index], index))
    return torch.stack(steps, dim=1)


__all__ = [
    "SamplingKwargs",
    "apply_cfg",
    "check_sampling_filters",
    "check_temperature",
    "feed_with_cache",
    "guide_batch",
    "sample_tokens",
    "sample_with_cache",
    "token_sampler",
    "top_k_top_p_filter",
]
