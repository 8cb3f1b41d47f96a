import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from vapi_trl.objective import (
    ce_prior,
    clipped_surrogate,
    corrupt_context,
    filtered_log_probs,
    gather_sample_log_probs,
    group_advantages,
    k3_kl,
    sample_groups,
    token_entropy,
)

pytestmark = pytest.mark.numerics


FAST = settings(max_examples=30, deadline=None)


# ----------------------------------------------------------------------------------------------- context corruption


@FAST
@given(
    num_images=st.integers(1, 4),
    num_tokens=st.integers(2, 20),
    codebook_size=st.integers(2, 50),
    noise_prob=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_corrupt_context_shape_range_and_prefix(num_images, num_tokens, codebook_size, noise_prob, seed):
    generator = torch.Generator().manual_seed(seed)
    target = torch.randint(0, codebook_size, (num_images, num_tokens), generator=generator)
    context = corrupt_context(target, noise_prob, codebook_size, generator=generator)
    assert context.shape == (num_images, num_tokens - 1)
    assert context.dtype == torch.long
    assert context.min() >= 0 and context.max() < codebook_size
    assert not context.data_ptr() == target.data_ptr()  # never aliases the clean targets


def test_corrupt_context_extremes():
    target = torch.randint(0, 16, (3, 10))
    assert torch.equal(corrupt_context(target, 0.0, 16), target[:, :-1])
    # ξ = 1: every token is redrawn uniformly; matches the original with probability 1/K only.
    target = torch.zeros(64, 257, dtype=torch.long)
    context = corrupt_context(target, 1.0, 1000, generator=torch.Generator().manual_seed(0))
    assert (context == 0).float().mean() < 0.01


def test_corrupt_context_effective_rate():
    generator = torch.Generator().manual_seed(0)
    target = torch.randint(0, 4, (200, 501), generator=generator)
    context = corrupt_context(target, 0.5, 4, generator=generator)
    changed = (context != target[:, :-1]).float().mean().item()
    assert abs(changed - 0.5 * (1 - 1 / 4)) < 0.01  # ξ(1 − 1/K)


def test_corrupt_context_rejects_bad_probability():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        corrupt_context(torch.zeros(1, 4, dtype=torch.long), 1.5, 8)


# ------------------------------------------------------------------------------------------------------ sampling


@FAST
@given(
    num_images=st.integers(1, 3),
    num_tokens=st.integers(1, 8),
    codebook_size=st.integers(2, 30),
    num_samples=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def test_sample_groups_shapes_and_log_probs(num_images, num_tokens, codebook_size, num_samples, seed):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(num_images, num_tokens, codebook_size, generator=generator) * 3
    log_probs = filtered_log_probs(logits)
    samples, sample_log_probs = sample_groups(log_probs, num_samples, generator=generator)
    assert samples.shape == sample_log_probs.shape == (num_images, num_samples, num_tokens)
    assert samples.min() >= 0 and samples.max() < codebook_size
    assert (sample_log_probs <= 0).all()
    # Each sample's log-prob is that of its own code at its own position under its own image's distribution.
    for u in range(num_images):
        for g in range(num_samples):
            for t in range(num_tokens):
                assert sample_log_probs[u, g, t] == log_probs[u, t, samples[u, g, t]]


def test_sample_groups_marginals_match_distribution():
    probs = torch.tensor([[[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]])
    samples, _ = sample_groups(probs.log(), 20000, generator=torch.Generator().manual_seed(0))
    for t in range(2):
        freq = torch.bincount(samples[0, :, t], minlength=3).float() / 20000
        assert torch.allclose(freq, probs[0, t], atol=0.015)


def test_sampling_respects_top_k_filter():
    logits = torch.randn(2, 5, 40)
    log_probs = filtered_log_probs(logits, top_k=3)
    samples, sample_log_probs = sample_groups(log_probs, 64)
    top3 = logits.topk(3, dim=-1).indices
    assert all(samples[u, g, t] in top3[u, t] for u in range(2) for g in range(64) for t in range(5))
    assert torch.isfinite(sample_log_probs).all()
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(2, 5))


def test_filtered_log_probs_temperature():
    logits = torch.randn(3, 7)
    assert torch.allclose(filtered_log_probs(logits, temperature=2.0), torch.log_softmax(logits / 2, -1))


def test_gather_sample_log_probs_matches_expanded_reference():
    log_probs = torch.log_softmax(torch.randn(2, 5, 11), -1)
    samples = torch.randint(0, 11, (2, 4, 5))
    expanded = log_probs[:, None].expand(2, 4, 5, 11)
    reference = expanded.gather(-1, samples[..., None]).squeeze(-1)
    assert torch.equal(gather_sample_log_probs(log_probs, samples), reference)


# ---------------------------------------------------------------------------------------------------- advantages


@FAST
@given(
    rewards=st.lists(st.lists(st.floats(-100, 100), min_size=2, max_size=9), min_size=1, max_size=4).filter(
        lambda rows: len({len(r) for r in rows}) == 1
    )
)
def test_group_advantages_zero_mean_unit_std(rewards):
    rewards = torch.tensor(rewards, dtype=torch.float32)
    advantages = group_advantages(rewards)
    assert torch.isfinite(advantages).all()
    assert torch.allclose(advantages.mean(1), torch.zeros(rewards.shape[0]), atol=1e-4)
    spread = rewards.std(1) > 1e-3
    if spread.any():
        assert torch.allclose(advantages[spread].std(1), torch.ones(int(spread.sum())), atol=1e-3)
    # Ranking inside a group is preserved.
    for row_r, row_a in zip(rewards, advantages):
        order = torch.argsort(row_r)
        assert (row_a[order].diff() >= -1e-6).all()


@FAST
@given(value=st.floats(-1e3, 1e3), group=st.integers(1, 10))
def test_group_advantages_all_equal_is_zero_never_nan(value, group):
    advantages = group_advantages(torch.full((3, group), value))
    assert torch.equal(advantages, torch.zeros(3, group))


def test_group_advantages_bound_and_clip():
    group = 8
    rewards = torch.zeros(1, group)
    rewards[0, 0] = 1.0  # the most extreme z-score a group of 8 can produce
    advantages = group_advantages(rewards)
    assert math.isclose(advantages.max().item(), (group - 1) / math.sqrt(group), rel_tol=1e-5)
    clipped = group_advantages(rewards, clip=1.0)
    assert clipped.max().item() == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------------------ surrogate


def test_clipped_surrogate_on_policy_is_minus_mean_advantage_and_gradient():
    logits = torch.randn(2, 6, 9, requires_grad=True)
    samples = torch.randint(0, 9, (2, 3, 6))
    advantages = torch.randn(2, 3)
    new = gather_sample_log_probs(torch.log_softmax(logits, -1), samples)
    loss, stats = clipped_surrogate(new, new.detach(), advantages)
    assert loss.item() == pytest.approx(-advantages.mean().item(), abs=1e-6)
    assert stats.clip_ratio_region.item() == 0.0 and stats.ratio_min.item() == pytest.approx(1.0)
    # At ρ = 1 the gradient is the REINFORCE gradient −mean(A · ∇ log π).
    (grad,) = torch.autograd.grad(loss, logits, retain_graph=True)
    reference_loss = -(advantages[..., None] * new).mean()
    (reference_grad,) = torch.autograd.grad(reference_loss, logits)
    assert torch.allclose(grad, reference_grad, atol=1e-6)


@FAST
@given(
    log_ratio=st.floats(-1.0, 1.0),
    advantage=st.floats(-3.0, 3.0),
    epsilon=st.floats(0.05, 0.5),
)
def test_clipped_surrogate_matches_scalar_ppo(log_ratio, advantage, epsilon):
    old = torch.zeros(1, 1, 1)
    new = torch.full((1, 1, 1), log_ratio)
    loss, _ = clipped_surrogate(new, old, torch.tensor([[advantage]]), epsilon)
    ratio = math.exp(log_ratio)
    expected = max(-advantage * ratio, -advantage * min(max(ratio, 1 - epsilon), 1 + epsilon))
    assert loss.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_clipped_surrogate_broadcasts_sequence_advantage_over_tokens():
    new = torch.log(torch.tensor([[[1.5, 1.0, 0.5]]]))  # ratios 1.5, 1, 0.5 against old log-prob 0
    loss, stats = clipped_surrogate(new, torch.zeros_like(new), torch.tensor([[1.0]]), 0.2)
    # A > 0: the ratio 1.5 is clipped to 1.2; 0.5 stays (pessimistic min).
    assert loss.item() == pytest.approx(-(1.2 + 1.0 + 0.5) / 3, rel=1e-6)
    assert stats.clip_ratio_high.item() == pytest.approx(1 / 3)
    assert stats.clip_ratio_low.item() == 0.0


# -------------------------------------------------------------------------------------------------- prior and KL


def test_ce_prior_matches_cross_entropy_and_ignores_temperature():
    logits = torch.randn(3, 5, 12)
    target = torch.randint(0, 12, (3, 5))
    expected = F.cross_entropy(logits.reshape(-1, 12), target.reshape(-1))
    assert ce_prior(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)


def test_k3_kl_is_zero_at_reference_and_positive_elsewhere():
    logps = torch.log_softmax(torch.randn(2, 3, 4), -1)
    assert k3_kl(logps, logps).item() == pytest.approx(0.0, abs=1e-7)
    assert k3_kl(logps, logps + 0.3).item() > 0


def test_token_entropy_uniform_and_filtered():
    assert token_entropy(torch.full((2, 8), -math.log(8))).item() == pytest.approx(math.log(8), rel=1e-6)
    filtered = filtered_log_probs(torch.zeros(1, 8), top_k=2)
    assert token_entropy(filtered).item() == pytest.approx(math.log(2), rel=1e-6)
