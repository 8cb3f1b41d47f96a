"""Evaluation: class-to-image sampler (seeding, CFG, resume, ADM layout) and FID / IS / precision-recall."""

import importlib.util
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vapi_trl.evaluation.metrics import (
    TorchFidelityInception,
    compute_metrics,
    frechet_distance,
    improved_precision_recall,
    inception_score,
    load_images,
)
from vapi_trl.evaluation.sample import (
    NPZ_FILE,
    SamplingSettings,
    batch_seed,
    sample_class_to_image,
    sample_labels,
    to_uint8_images,
)
from .conftest import assert_close_scaled

pytestmark = pytest.mark.numerics


def settings(**overrides) -> SamplingSettings:
    values = dict(num_samples=5, batch_size=2, seed=3, resize=16, model_path="tiny")
    values.update(overrides)
    return SamplingSettings(**values)


def run(policy, tokenizer, path, **overrides):
    return sample_class_to_image(policy, tokenizer, path, settings(**overrides), progress=False)


def test_sampler_is_deterministic_and_writes_adm_layout(tmp_path, tiny_policy, tiny_image_tokenizer):
    first = run(tiny_policy, tiny_image_tokenizer, tmp_path / "a")
    second = run(tiny_policy, tiny_image_tokenizer, tmp_path / "b")
    arr_a = np.load(first["npz"])["arr_0"]
    assert arr_a.dtype == np.uint8 and arr_a.shape == (5, 16, 16, 3)
    np.testing.assert_array_equal(arr_a, np.load(second["npz"])["arr_0"])
    assert sorted(os.listdir(tmp_path / "a")) == ["000000.png", "000001.png", "000002.png", "000003.png",
                                                  "000004.png", "run.json", NPZ_FILE]  # fmt: skip
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a" / "000004.png")), arr_a[4])
    other_seed = np.load(run(tiny_policy, tiny_image_tokenizer, tmp_path / "c", seed=4)["npz"])["arr_0"]
    assert not np.array_equal(arr_a, other_seed)
    assert first["seed"] == 3 and first["label_scheme"] == "random" and first["cfg_scale"] == 1.0


def test_sampler_batch_seeding_reproduces_a_batch_alone(tmp_path, tiny_policy, tiny_image_tokenizer):
    arr = np.load(run(tiny_policy, tiny_image_tokenizer, tmp_path / "a")["npz"])["arr_0"]
    labels = sample_labels(5, tiny_policy.config.num_classes, seed=3)
    generator = torch.Generator().manual_seed(batch_seed(3, 1))
    ids = tiny_policy.sample(labels[2:4], generator=generator)
    np.testing.assert_array_equal(to_uint8_images(tiny_image_tokenizer.decode(ids), 16), arr[2:4])
    assert batch_seed(0, 1) != batch_seed(1, 0)


def test_resume_skips_finished_batches_and_rejects_other_settings(tmp_path, tiny_policy, tiny_image_tokenizer):
    out = tmp_path / "s"
    reference = np.load(run(tiny_policy, tiny_image_tokenizer, out)["npz"])["arr_0"].copy()
    os.remove(out / "000003.png")
    record = run(tiny_policy, tiny_image_tokenizer, out)
    assert (record["generated_batches"], record["skipped_batches"]) == (1, 2)
    np.testing.assert_array_equal(np.load(record["npz"])["arr_0"], reference)
    again = run(tiny_policy, tiny_image_tokenizer, out)
    assert (again["generated_batches"], again["skipped_batches"]) == (0, 3)
    with pytest.raises(ValueError, match=r"other settings \(cfg_scale: 1.0 -> 2.0\)"):
        run(tiny_policy, tiny_image_tokenizer, out, cfg_scale=2.0)


def test_cfg_scale_one_equals_no_guidance(tiny_policy):
    labels, context = torch.tensor([1, 4]), torch.randint(0, 64, (2, 15))
    tiny_policy.eval()  # sampling-time forwards: no dropout
    with torch.no_grad():
        plain = tiny_policy(class_labels=labels, context_ids=context).logits
        # Just above 1 runs the batched cond/null branch; the guided logits must collapse onto the conditional ones.
        guided = tiny_policy(class_labels=labels, context_ids=context, cfg_scale=1.0 + 1e-7).logits
        null = tiny_policy(class_labels=tiny_policy.uncond(labels), context_ids=context).logits
        strong = tiny_policy(class_labels=labels, context_ids=context, cfg_scale=3.0).logits
    assert_close_scaled(guided, plain)
    assert_close_scaled(strong, null + 3.0 * (plain - null))


def test_labels_and_uint8_conversion():
    balanced = sample_labels(20, 10, seed=0, scheme="balanced")
    assert torch.equal(torch.bincount(balanced), torch.full((10,), 2))
    random = sample_labels(1000, 10, seed=0)
    assert torch.equal(random, sample_labels(1000, 10, seed=0)) and len(random.unique()) == 10
    x = torch.tensor([-1.5, -1.0, 0.0, 0.0039, 0.999, 1.2]).view(1, 1, 1, 6).expand(1, 3, 1, 6)
    assert to_uint8_images(x, resize=None)[0, 0, :, 0].tolist() == [0, 0, 128, 128, 255, 255]
    image = torch.rand(2, 3, 24, 24) * 2 - 1
    expected = torch.clamp(127.5 * F.interpolate(image, size=(16, 16), mode="bicubic") + 128, 0, 255).to(torch.uint8)
    np.testing.assert_array_equal(to_uint8_images(image, resize=16), expected.permute(0, 2, 3, 1).numpy())


# ---------------------------------------------------------------- metrics


def block_features(images: torch.Tensor) -> torch.Tensor:
    """Injected extractor: 4x4 average-pooled pixels of uint8 [B, 3, 16, 16] -> [B, 48]."""
    return F.avg_pool2d(images.float() / 255.0, 4).flatten(1)


def synthetic_images(n: int, seed: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(100 + shift, 30, size=(n, 16, 16, 3)), 0, 255).astype(np.uint8)


def test_fid_identical_sets_zero_and_shift_increases():
    real = synthetic_images(64, seed=0)
    same = compute_metrics(real, real.copy(), block_features, evaluator_name="test-extractor")
    assert abs(same.fid) < 1e-6 and same.precision == 1.0 and same.recall == 1.0
    assert same.inception_score is None and "no classification head" in same.notes["inception_score"]
    other = compute_metrics(synthetic_images(64, seed=1), real, block_features)
    shifted = compute_metrics(synthetic_images(64, seed=1, shift=60), real, block_features)
    assert 0 < other.fid < shifted.fid
    assert shifted.precision < other.precision
    assert "evaluator: test-extractor" in same.format()


def test_frechet_distance_closed_form():
    # 1-D Gaussians N(0, 1) and N(2, 4): (0 - 2)^2 + 1 + 4 - 2 * sqrt(1 * 4) = 5.
    assert frechet_distance(np.zeros(1), np.eye(1), np.full(1, 2.0), 4 * np.eye(1)) == pytest.approx(5.0)


def test_inception_score_extremes():
    confident = torch.full((100, 10), -20.0)
    confident[torch.arange(100), torch.arange(100) % 10] = 20.0
    assert inception_score(confident.numpy())[0] == pytest.approx(10.0, rel=1e-4)
    assert inception_score(np.zeros((100, 10)))[0] == pytest.approx(1.0)

    def with_logits(images):
        pool = block_features(images)
        return {"pool": pool, "logits": 50 * pool[:, :10]}

    result = compute_metrics(synthetic_images(40, 0), synthetic_images(40, 1), with_logits, num_splits=4)
    assert result.inception_score is not None and result.inception_score >= 1.0


def test_precision_recall_disjoint_and_nested():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(200, 4))
    far = rng.normal(size=(200, 4)) + 100
    assert improved_precision_recall(real, far) == (0.0, 0.0)
    # Samples from a narrow core of the real distribution: precise, but they miss most of it (low recall).
    core = rng.normal(size=(200, 4)) * 0.1
    precision, recall = improved_precision_recall(real, core)
    assert precision > 0.9 and recall < 0.3


def test_load_images_folder_and_npz_agree(tmp_path):
    images = synthetic_images(3, seed=0)
    for index, image in enumerate(images):
        Image.fromarray(image).save(tmp_path / f"{index:06d}.png")
    np.savez(tmp_path / "x.npz", arr_0=images)
    np.testing.assert_array_equal(load_images(tmp_path), images)
    np.testing.assert_array_equal(load_images(tmp_path / "x.npz"), images)
    with pytest.raises(FileNotFoundError):
        load_images(tmp_path / "missing")


@pytest.mark.skipif(importlib.util.find_spec("torch_fidelity") is None, reason="torch-fidelity not installed")
def test_torch_fidelity_without_weights_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(FileNotFoundError, match="--inception_path"):
        TorchFidelityInception()
    (tmp_path / "bad.pth").write_text("nope")
    with pytest.raises(ValueError, match="not a plain state dict"):
        TorchFidelityInception(str(tmp_path / "bad.pth"))
