import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vapi_trl.demo import embedded
from vapi_trl.evaluation.small_benchmark import (
    SmallClassifier,
    balanced_labels,
    distribution_metrics,
    kid,
    summarize,
)


def test_kid_is_zero_for_one_distribution_and_grows_with_a_shift():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(600, 16))
    same = rng.normal(size=(600, 16))
    shifted = rng.normal(size=(600, 16)) + 0.5
    same_mean, _ = kid(real, same, num_subsets=20, subset_size=300)
    shifted_mean, _ = kid(real, shifted, num_subsets=20, subset_size=300)
    assert abs(same_mean) < 0.01
    assert shifted_mean > 10 * max(abs(same_mean), 1e-3)
    with pytest.raises(ValueError, match="features"):
        kid(real, rng.normal(size=(10, 8)))


def test_distribution_metrics_on_synthetic_features():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(400, 8))
    same = distribution_metrics(real, rng.normal(size=(400, 8)))
    far = distribution_metrics(real, rng.normal(size=(400, 8)) * 0.2 + 3.0)
    assert same["fid"] < 0.5 < far["fid"]
    assert same["kid"] < far["kid"]
    assert same["precision"] > 0.8 and same["recall"] > 0.8
    assert far["precision"] < 0.1 and far["recall"] < 0.1


def test_summarize_and_balanced_labels():
    summary = summarize([{"fid": 1.0}, {"fid": 3.0}, {"fid": 2.0}])
    assert summary["fid"] == {"mean": 2.0, "std": 1.0, "n": 3}
    assert torch.equal(torch.bincount(balanced_labels(50, 10)), torch.full((10,), 5))


def test_small_classifier_roundtrip(tmp_path):
    torch.manual_seed(0)
    model = SmallClassifier().eval()
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    model.save_pretrained(str(tmp_path))
    loaded = SmallClassifier.from_pretrained(str(tmp_path))
    out, again = model(images), loaded(images)
    assert out["pool"].shape == (4, 64) and out["logits"].shape == (4, 10)
    assert torch.equal(out["logits"], again["logits"])
    with pytest.raises(FileNotFoundError, match="SmallClassifier"):
        SmallClassifier.from_pretrained(str(tmp_path / "missing"))


def test_embedded_splits_are_disjoint_balanced_and_load_as_a_dataset():
    data = embedded._load_npz()
    # train (a part of the pretraining pool), val (early stopping, setting choice) and holdout (the held-out
    # classifier) come from Fashion-MNIST's training set and must not share an image; test is its test set.
    seen = {name: {row.tobytes() for row in data[f"{name}_images"]} for name in ("train", "val", "holdout")}
    assert not seen["train"] & seen["val"] and not seen["train"] & seen["holdout"]
    assert not seen["val"] & seen["holdout"]
    for split in embedded.SPLITS:
        images, labels = embedded.load_arrays(split)
        assert images.shape[1:] == (32, 32) and images.dtype == np.uint8
        assert len(images) >= 2000 and np.bincount(labels).min() == np.bincount(labels).max()
    dataset = embedded.load_dataset("test", limit=4)
    assert dataset.column_names == ["image", "class_label"] and dataset[0]["image"].size == (32, 32)


def test_shipped_weights_reproduce_their_recorded_teacher_forced_loss():
    recipe = embedded.load_recipe()
    reference = recipe["reference_batch"]
    policy, image_tokenizer = embedded.load_policy(), embedded.load_image_tokenizer()
    images, labels = embedded.load_arrays("test", limit=reference["num_images"])
    ids = image_tokenizer.encode(embedded.to_pixels(images))
    with torch.no_grad():
        logits = policy(class_labels=torch.as_tensor(labels), context_ids=ids[:, :-1]).logits
    ce = F.cross_entropy(logits.flatten(0, 1), ids.flatten()).item()
    assert ce == pytest.approx(reference["ce"], abs=1e-4)
    # The shipped policy has learned something: far below the uniform log K.
    assert ce < 0.8 * np.log(policy.codebook_size)
    # The shipped classifiers reproduce their recorded test accuracy (first 500 test images, within sampling noise).
    test_images, test_labels = embedded.load_arrays("test", limit=500)
    for name, classifier in zip(("feature", "heldout"), embedded.load_classifiers()):
        with torch.no_grad():
            predictions = classifier(torch.from_numpy(test_images).float().div(127.5).sub(1)[:, None])["logits"]
        accuracy = (predictions.argmax(1).numpy() == test_labels).mean()
        assert accuracy > 0.7
        assert accuracy == pytest.approx(recipe["classifiers"][name]["test_accuracy"], abs=0.06)
    assert json.dumps(recipe)  # plain JSON
