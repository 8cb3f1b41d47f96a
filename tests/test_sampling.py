import math

import pytest
import torch

from vapi_trl.sampling import apply_cfg, sample_tokens, top_k_top_p_filter

pytestmark = pytest.mark.numerics


@pytest.fixture
def logits() -> torch.Tensor:
    return torch.randn(2, 3, 50, generator=torch.Generator().manual_seed(0))


class TestTopKTopPFilter:
    def test_no_op_returns_input(self, logits):
        assert top_k_top_p_filter(logits) is logits
        assert top_k_top_p_filter(logits, top_k=0, top_p=1.0) is logits
        assert torch.equal(top_k_top_p_filter(logits, top_k=50), logits)
        assert torch.equal(top_k_top_p_filter(logits, top_k=1000), logits)

    @pytest.mark.parametrize("top_k", [1, 7, 49])
    def test_top_k_keeps_exactly_k_highest(self, logits, top_k):
        filtered = top_k_top_p_filter(logits, top_k=top_k)
        kept = torch.isfinite(filtered)
        assert torch.all(kept.sum(-1) == top_k)
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        assert torch.equal(kept, logits >= kth)
        assert torch.equal(filtered[kept], logits[kept])
        assert torch.all(filtered[~kept] == float("-inf"))

    def test_top_k_exact_with_ties(self):
        filtered = top_k_top_p_filter(torch.zeros(4, 10), top_k=3)
        assert torch.all(torch.isfinite(filtered).sum(-1) == 3)

    def test_top_p_keeps_smallest_nucleus(self):
        probs = torch.tensor([0.05, 0.5, 0.15, 0.3])
        logits = probs.log()
        kept = lambda top_p: torch.isfinite(top_k_top_p_filter(logits, top_p=top_p))  # noqa: E731
        assert kept(0.4).tolist() == [False, True, False, False]  # 0.5 >= 0.4
        assert kept(0.6).tolist() == [False, True, False, True]  # 0.5 < 0.6 <= 0.8
        assert kept(0.85).tolist() == [False, True, True, True]  # 0.8 < 0.85 <= 0.95
        assert kept(0.99).tolist() == [True, True, True, True]
        assert kept(1e-6).tolist() == [False, True, False, False]  # the top entry always survives

    def test_top_p_nucleus_is_minimal_on_random_rows(self, logits):
        top_p = 0.7
        filtered = top_k_top_p_filter(logits, top_p=top_p)
        probs = logits.softmax(-1)
        kept = torch.isfinite(filtered)
        mass = (probs * kept).sum(-1)
        smallest_kept = probs.masked_fill(~kept, math.inf).amin(-1)
        assert torch.all(mass >= top_p)
        assert torch.all(mass - smallest_kept < top_p)  # dropping the least likely kept entry falls short
        assert torch.all(probs.masked_fill(kept, -1).amax(-1) <= smallest_kept)  # kept entries are the top ones

    def test_top_k_then_top_p(self):
        logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]])
        filtered = top_k_top_p_filter(logits, top_k=3, top_p=0.9)
        # Nucleus of the renormalised top-3 distribution (0.665, 0.245, 0.090): the first two reach 0.909.
        assert torch.isfinite(filtered).tolist() == [[True, True, False, False, False]]

    def test_does_not_modify_input_and_keeps_gradient(self, logits):
        leaf = logits.clone().requires_grad_(True)
        before = leaf.detach().clone()
        filtered = top_k_top_p_filter(leaf, top_k=5, top_p=0.8)
        assert torch.equal(leaf.detach(), before) and filtered.dtype == leaf.dtype
        filtered.log_softmax(-1).gather(-1, leaf.argmax(-1, keepdim=True)).sum().backward()
        assert torch.isfinite(leaf.grad).all() and leaf.grad.abs().sum() > 0

    def test_bf16(self, logits):
        filtered = top_k_top_p_filter(logits.bfloat16(), top_k=4, top_p=0.5)
        assert filtered.dtype == torch.bfloat16 and torch.all(torch.isfinite(filtered).sum(-1) <= 4)

    @pytest.mark.parametrize("kwargs", [{"top_k": -1}, {"top_p": 0.0}, {"top_p": 1.5}])
    def test_rejects_bad_values(self, logits, kwargs):
        with pytest.raises(ValueError):
            top_k_top_p_filter(logits, **kwargs)


def test_apply_cfg():
    cond, uncond = torch.tensor([1.0, 2.0, -1.0]), torch.tensor([0.5, 3.0, -1.0])
    torch.testing.assert_close(apply_cfg(cond, uncond, 3.0), torch.tensor([2.0, 0.0, -1.0]))
    torch.testing.assert_close(apply_cfg(cond, uncond, 1.0), cond)
    torch.testing.assert_close(apply_cfg(cond, uncond, 0.0), uncond)
    with pytest.raises(ValueError, match="same shape"):
        apply_cfg(cond, uncond[:2], 2.0)


class TestSampleTokens:
    def test_greedy_is_argmax(self, logits):
        assert torch.equal(sample_tokens(logits, greedy=True), logits.argmax(-1))

    def test_shape_range_and_reproducibility(self, logits):
        ids = sample_tokens(logits, generator=torch.Generator().manual_seed(3))
        assert ids.shape == (2, 3) and ids.dtype == torch.long
        assert ids.min() >= 0 and ids.max() < 50
        assert torch.equal(ids, sample_tokens(logits, generator=torch.Generator().manual_seed(3)))

    def test_draws_only_from_filtered_set(self, logits):
        allowed = torch.isfinite(top_k_top_p_filter(logits / 0.7, top_k=5, top_p=0.6))
        generator = torch.Generator().manual_seed(0)
        for _ in range(20):
            ids = sample_tokens(logits, temperature=0.7, top_k=5, top_p=0.6, generator=generator)
            assert allowed.gather(-1, ids.unsqueeze(-1)).all()

    def test_top_k_one_is_greedy(self, logits):
        assert torch.equal(sample_tokens(logits, top_k=1), logits.argmax(-1))

    def test_frequencies_follow_temperature(self):
        logits = torch.tensor([0.0, math.log(3.0)])  # p = (0.25, 0.75) at temperature 1
        generator = torch.Generator().manual_seed(0)
        ids = sample_tokens(logits.expand(20000, 2), temperature=0.5, generator=generator)
        assert abs(ids.float().mean().item() - 0.9) < 0.01  # (1, 9) / 10 at temperature 0.5

    def test_rejects_non_positive_temperature(self, logits):
        with pytest.raises(ValueError, match="greedy=True"):
            sample_tokens(logits, temperature=0.0)
