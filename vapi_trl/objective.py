"""The VA-π objective as pure functions.

Notation: U source images, G samples per image, N image tokens, K codebook size. Every function here is stateless and
device-agnostic; the trainer composes them in this order:

    corrupt_context -> (policy forward) -> filtered_log_probs -> sample_groups -> (decode, reward) -> group_advantages
    -> (policy forward with grad) -> gather_sample_log_probs -> clipped_surrogate + ce_prior (+ k3_kl)

Because the G samples of an image share one context, one policy forward per image serves all of them: the log-probs of
the G samples are gathered from the same [U, N, K] log-softmax.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .sampling import top_k_top_p_filter


def check_probability(value: float, name: str) -> None:
    """Raise a `ValueError` naming `name` unless `value` is a probability in [0, 1]."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}.")


def corrupt_context(
    target_ids: torch.LongTensor,
    noise_prob: float,
    codebook_size: int,
    generator: torch.Generator | None = None,
) -> torch.LongTensor:
    """Build the noisy teacher-forcing context of each image.

    Each of the first N−1 ground-truth tokens is replaced, with probability `noise_prob`, by a code drawn uniformly from
    [0, K). The draw is made once per image: the caller shares the result between the image's G samples, the sampling
    pass, the loss pass and the CE prior. Because the random code can equal the original, the effective corruption rate
    is ξ·(1 − 1/K).

    Args:
        target_ids: `[U, N]` int64 clean tokens x* in [0, K).
        noise_prob: ξ in [0, 1].
        codebook_size: K.
        generator: optional RNG on the same device as `target_ids`.

    Returns:
        `[U, N−1]` int64 context ids in [0, K).
    """
    check_probability(noise_prob, "noise_prob (ξ)")
    context = target_ids[:, :-1]
    if noise_prob == 0.0:
        return context.clone()
    mask = torch.rand(context.shape, generator=generator, device=context.device) < noise_prob
    random_codes = torch.randint(0, codebook_size, context.shape, generator=generator, device=context.device)
    return torch.where(mask, random_codes, context)


def filtered_log_probs(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0
) -> torch.Tensor:
    """Log-softmax of temperature-scaled, top-k/top-p filtered logits.

    The same function serves the sampling pass (old log-probs) and the loss pass (new log-probs), so a filter applied
    in training is applied on both sides of the ratio.

    Args:
        logits: `[..., K]` raw logits (any float dtype; computed in fp32).

    Returns:
        `[..., K]` fp32 log-probabilities, `-inf` on filtered codes.
    """
    logits = logits.float() / temperature
    if top_k > 0 or top_p < 1.0:
        logits = top_k_top_p_filter(logits, top_k=top_k, top_p=top_p)
    return torch.log_softmax(logits, dim=-1)


def sample_groups(
    log_probs: torch.Tensor, num_samples: int, generator: torch.Generator | None = None
) -> tuple[torch.LongTensor, torch.Tensor]:
    """Draw G token sequences per image by sampling every position independently (not an autoregressive rollout).

    Args:
        log_probs: `[U, N, K]` fp32 log-probabilities from [`filtered_log_probs`].
        num_samples: G.
        generator: optional RNG on the same device as `log_probs`.

    Returns:
        `samples` `[U, G, N]` int64 codes in [0, K) and their log-probabilities `[U, G, N]` fp32 (≤ 0).
    """
    num_images, num_tokens, codebook_size = log_probs.shape
    probs = log_probs.exp().reshape(num_images * num_tokens, codebook_size)
    draws = torch.multinomial(probs, num_samples, replacement=True, generator=generator)  # [U·N, G]
    samples = draws.view(num_images, num_tokens, num_samples).transpose(1, 2).contiguous()
    return samples, gather_sample_log_probs(log_probs, samples)


def gather_sample_log_probs(log_probs: torch.Tensor, samples: torch.LongTensor) -> torch.Tensor:
    """Log-probabilities of G sample sequences under one shared per-image distribution.

    Args:
        log_probs: `[U, N, K]` log-probabilities (one per image, shared by its samples).
        samples: `[U, G, N]` int64 codes.

    Returns:
        `[U, G, N]` log-probabilities, without materialising a `[U, G, N, K]` tensor.
    """
    index = samples.transpose(1, 2)  # [U, N, G]
    return log_probs.gather(-1, index).transpose(1, 2)


def group_advantages(rewards: torch.Tensor, std_eps: float = 1e-8, clip: float | None = None) -> torch.Tensor:
    """Group z-scores of the rewards of each image's G samples.

    Uses the unbiased (n−1) standard deviation. A group of identical rewards gives zeros, and so does G = 1.

    Args:
        rewards: `[U, G]` fp32 rewards (higher is better).
        std_eps: added to the standard deviation.
        clip: clamp the result to ±clip when given.

    Returns:
        `[U, G]` fp32 advantages.
    """
    rewards = rewards.float()
    if rewards.shape[1] < 2:
        return torch.zeros_like(rewards)
    centered = rewards - rewards.mean(dim=1, keepdim=True)
    advantages = centered / (rewards.std(dim=1, keepdim=True, unbiased=True) + std_eps)
    # A group of identical rewards can still have a rounding-level mean offset (e.g. 3 × 341.55 in fp32), which the
    # division by a near-zero std would blow up to O(1) advantages: force those groups to exactly zero.
    constant = rewards.amax(dim=1, keepdim=True) == rewards.amin(dim=1, keepdim=True)
    advantages = advantages.masked_fill(constant, 0.0)
    if clip is not None:
        advantages = advantages.clamp(-clip, clip)
    return advantages


@dataclass
class SurrogateStats:
    """Diagnostics of the clipped surrogate, all 0-dim tensors."""

    clip_ratio_low: torch.Tensor
    clip_ratio_high: torch.Tensor
    clip_ratio_region: torch.Tensor
    ratio_min: torch.Tensor
    ratio_max: torch.Tensor


def clipped_surrogate(
    new_log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    epsilon_low: float = 0.2,
    epsilon_high: float | None = None,
) -> tuple[torch.Tensor, SurrogateStats]:
    """PPO-style clipped surrogate with per-token ratios and the sequence advantage broadcast over tokens.

    `L = mean_{u,g} mean_t max(−A·ρ, −A·clip(ρ, 1−ε_low, 1+ε_high))`, with `ρ = exp(new − old)`.

    Args:
        new_log_probs: `[U, G, N]` log-probabilities under the current policy (with grad).
        old_log_probs: `[U, G, N]` log-probabilities at sampling time (no grad).
        advantages: `[U, G]` sequence advantages.

    Returns:
        The scalar loss and its [`SurrogateStats`].
    """
    epsilon_high = epsilon_low if epsilon_high is None else epsilon_high
    ratio = torch.exp(new_log_probs - old_log_probs.detach())
    adv = advantages.detach().unsqueeze(-1)
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1 - epsilon_low, 1 + epsilon_high)
    loss = torch.maximum(unclipped, clipped).mean()
    with torch.no_grad():
        low = (ratio < 1 - epsilon_low) & (adv < 0)
        high = (ratio > 1 + epsilon_high) & (adv > 0)
        stats = SurrogateStats(
            clip_ratio_low=low.float().mean(),
            clip_ratio_high=high.float().mean(),
            clip_ratio_region=(low | high).float().mean(),
            ratio_min=ratio.min(),
            ratio_max=ratio.max(),
        )
    return loss, stats


def ce_prior(logits: torch.Tensor, target_ids: torch.LongTensor) -> torch.Tensor:
    """Cross-entropy of the clean tokens x* given the (noisy) context, without temperature.

    Args:
        logits: `[U, N, K]` teacher-forced logits.
        target_ids: `[U, N]` int64 clean tokens.

    Returns:
        Scalar mean over images and positions.
    """
    return F.cross_entropy(logits.float().flatten(0, 1), target_ids.flatten())


def k3_kl(new_log_probs: torch.Tensor, ref_log_probs: torch.Tensor) -> torch.Tensor:
    """k3 estimator of KL(π_θ ‖ π_ref) on sampled tokens: `mean(e^d − d − 1)`, `d = ref − new` (≥ 0 per token)."""
    delta = ref_log_probs.detach() - new_log_probs
    return (torch.exp(delta) - delta - 1).mean()


def token_entropy(log_probs: torch.Tensor) -> torch.Tensor:
    """Mean entropy (nats) of `[..., K]` log-probabilities; filtered (`-inf`) codes contribute 0."""
    probs = log_probs.exp()
    return -(probs * log_probs.masked_fill(probs == 0, 0.0)).sum(-1).mean()


__all__ = [
    "SurrogateStats",
    "ce_prior",
    "check_probability",
    "clipped_surrogate",
    "corrupt_context",
    "filtered_log_probs",
    "gather_sample_log_probs",
    "group_advantages",
    "k3_kl",
    "sample_groups",
    "token_entropy",
]
