import os

import pytest
import torch

from vapi_trl.rewards import (
    LPIPSWeightsNotFoundError,
    PixelReconstructionReward,
    build_lpips,
    ensure_lpips_backbone,
    lpips_backbone_path,
)
from .conftest import assert_close_scaled

pytestmark = pytest.mark.numerics


@pytest.fixture(scope="module")
def random_lpips():
    torch.manual_seed(0)
    return build_lpips("alex", random_backbone=True)


def test_reward_matches_lpips_package_and_mse(random_lpips):
    torch.manual_seed(1)
    samples = torch.rand(2, 3, 3, 32, 32) * 2.4 - 1.2  # decodes overshoot [-1, 1]; never clamped
    targets = torch.rand(2, 3, 32, 32) * 2 - 1
    reward = PixelReconstructionReward(pixel_weight=1.0, lpips_weight=0.5, lpips_model=random_lpips, chunk_size=4)
    terms = reward(samples, targets)
    assert terms.total.shape == terms.pixel.shape == terms.lpips.shape == (2, 3)

    expected_mse = ((samples - targets[:, None]) ** 2).mean(dim=(2, 3, 4))
    assert_close_scaled(terms.pixel, expected_mse)
    # The cached-reference LPIPS equals the lpips package computing both images every time.
    expected_lpips = random_lpips(samples.flatten(0, 1), targets.repeat_interleave(3, 0)).view(2, 3)
    assert_close_scaled(terms.lpips, expected_lpips)
    assert_close_scaled(terms.total, -(expected_mse + 0.5 * expected_lpips))


def test_reward_l1_and_no_lpips():
    samples = torch.zeros(1, 2, 3, 8, 8)
    samples[0, 1] = 0.5
    targets = torch.zeros(1, 3, 8, 8)
    terms = PixelReconstructionReward(pixel_loss="l1", lpips_weight=0.0)(samples, targets)
    assert terms.lpips is None
    assert torch.allclose(terms.total, torch.tensor([[0.0, -0.5]]))


def test_perfect_reconstruction_scores_best(random_lpips):
    targets = torch.rand(1, 3, 32, 32) * 2 - 1
    samples = torch.stack([targets[0], targets[0] + 0.3 * torch.randn_like(targets[0])])[None]
    terms = PixelReconstructionReward(lpips_model=random_lpips)(samples, targets)
    assert terms.total[0, 0] == pytest.approx(0.0, abs=1e-6)
    assert terms.total[0, 1] < terms.total[0, 0]


def test_reward_shape_errors():
    reward = PixelReconstructionReward(lpips_weight=0.0)
    with pytest.raises(ValueError, match="decoded samples have size"):
        reward(torch.zeros(1, 2, 3, 16, 16), torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"\[U, G, 3, H, W\]"):
        reward(torch.zeros(2, 3, 16, 16), torch.zeros(2, 3, 16, 16))
    with pytest.raises(ValueError, match="lpips_model"):
        PixelReconstructionReward(lpips_weight=1.0)


def test_missing_backbone_offline_names_file_and_location(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    expected = os.path.join(str(tmp_path), "hub", "checkpoints", "vgg16-397923af.pth")
    assert lpips_backbone_path("vgg") == expected
    with pytest.raises(LPIPSWeightsNotFoundError) as error:
        build_lpips("vgg")
    assert "vgg16-397923af.pth" in str(error.value) and expected in str(error.value)
    assert "lpips_weight=0" in str(error.value)


def test_cached_backbone_is_used(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # A locally cached torchvision AlexNet file is picked up without any download.
    from torchvision.models import alexnet

    torch.manual_seed(0)
    state = alexnet().state_dict()
    path = lpips_backbone_path("alex")
    os.makedirs(os.path.dirname(path))
    torch.save(state, path)
    assert ensure_lpips_backbone("alex") == path
    model = build_lpips("alex")
    assert torch.equal(model.net.slice1[0].weight, state["features.0.weight"])
    assert not any(p.requires_grad for p in model.parameters())


def test_per_sample_reward_function_matches_grouped_reward(random_lpips):
    from vapi_trl.rewards import PixelReconstructionRewardFunc

    torch.manual_seed(2)
    samples = torch.rand(2, 3, 3, 32, 32) * 2 - 1
    targets = torch.rand(2, 3, 32, 32) * 2 - 1
    reward = PixelReconstructionReward(lpips_model=random_lpips)
    func = PixelReconstructionRewardFunc(reward)
    assert func.__name__ == "pixel_reconstruction"
    values = func(
        prompts=[0] * 6, completions=list(samples.flatten(0, 1)), target_pixels=list(targets.repeat_interleave(3, 0))
    )
    assert_close_scaled(torch.tensor(values).view(2, 3), reward(samples, targets).total)
