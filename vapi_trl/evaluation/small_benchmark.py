"""
Quality metrics of the small (embedded Fashion-MNIST) benchmark, computed on CPU in seconds.

A generator is scored on free-running samples (KV-cache AR sampling, τ = 1, no top-k/top-p, no CFG, balanced labels)
against the held-out `test` split, with extractors trained on the embedded data instead of Inception:

- **FID, KID, precision, recall** on the 64-d penultimate features of the *feature* classifier (`SmallClassifier`
  trained on `train`). FID and precision/recall come from `vapi_trl.evaluation.metrics` (same math as the ADM
  evaluator); KID is defined here because that module has none.
- **Conditional accuracy**: share of samples that the *held-out* classifier (trained on the disjoint `holdout` split,
  never seen by the generator) assigns to the class they were generated for.
- **Teacher-forced reconstruction MSE**: on held-out test images, one teacher-forced pass on the clean tokens, one
  token drawn per position (τ = 1), VQ-decoded, MSE against the original image on the [-1, 1] scale — the quantity
  VA-π's reward optimises, measured on images the policy was not tuned on.
- **Held-out CE**: teacher-forced next-token cross-entropy (nats/token) of the clean test tokens.

`real_floor` gives the value of each metric for real data (a second disjoint half of `test` against the reference
half, the VQ's own reconstruction error), so the noise level and the attainable value are visible next to the scores.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .arrays import to_pixels, to_rgb_uint8
from .metrics import extract_features, feature_statistics, frechet_distance, improved_precision_recall

#: The teacher-forced scores of `SmallBenchmark.evaluate`: they depend on the policy and the seed, not on the sampling
#: setting, so a sweep over τ / top-k of one policy computes them once.
TEACHER_FORCED_METRICS = ("heldout_ce", "tf_recon_mse")
CLASSIFIER_CONFIG = "classifier_config.json"
CLASSIFIER_WEIGHTS = "model.safetensors"


class SmallClassifier(nn.Module):
    """
    Small CNN for 32×32 images: 3 conv stages (32, 64, 128 channels, each halving the side) → flatten (4×4×128) →
    64-d features → `num_classes` logits.

    Called on uint8 RGB `[B, 3, 32, 32]` (the metrics extractor convention) it returns `{"pool": [B, 64],
    "logits": [B, num_classes]}`; channels are averaged (Fashion-MNIST is grayscale) and scaled to [-1, 1].
    """

    def __init__(self, num_classes: int = 10, feature_dim: int = 64) -> None:
        super().__init__()
        self.config = {"num_classes": num_classes, "feature_dim": feature_dim}
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(128 * 4 * 4, feature_dim), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(feature_dim, num_classes)
        self.name = "SmallClassifier"

    @staticmethod
    def normalize(images: torch.Tensor) -> torch.Tensor:
        """uint8 `[B, 3, H, W]` (0–255) or float `[B, 1|3, H, W]` in [-1, 1] → float `[B, 1, H, W]` in [-1, 1]."""
        if images.dtype == torch.uint8:
            images = images.float().div(127.5).sub(1.0)
        return images.mean(dim=1, keepdim=True)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.body(self.normalize(images))
        return {"pool": features, "logits": self.head(features)}

    def save_pretrained(self, directory: str) -> None:
        """Write `classifier_config.json` and `model.safetensors` to `directory`."""
        from safetensors.torch import save_file

        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, CLASSIFIER_CONFIG), "w") as f:
            json.dump(self.config, f, indent=2)
        state = {key: value.contiguous() for key, value in self.state_dict().items()}
        save_file(state, os.path.join(directory, CLASSIFIER_WEIGHTS))

    @classmethod
    def from_pretrained(cls, directory: str) -> SmallClassifier:
        """Load a classifier written by `save_pretrained` (strict), frozen, in eval mode."""
        from safetensors.torch import load_file

        config_path, weights_path = (os.path.join(directory, name) for name in (CLASSIFIER_CONFIG, CLASSIFIER_WEIGHTS))
        if not (os.path.isfile(config_path) and os.path.isfile(weights_path)):
            raise FileNotFoundError(
                f"No SmallClassifier in '{directory}': expected {CLASSIFIER_CONFIG} and {CLASSIFIER_WEIGHTS} "
                "(written by `SmallClassifier.save_pretrained`, e.g. by scripts/pretrain_tiny.py)."
            )
        with open(config_path) as f:
            model = cls(**json.load(f))
        model.load_state_dict(load_file(weights_path), strict=True)
        return model.eval().requires_grad_(False)


# ------------------------------------------------------------------------------------------------------------------
# Distribution metrics on features
# ------------------------------------------------------------------------------------------------------------------


def kid(
    real_features: np.ndarray,
    fake_features: np.ndarray,
    num_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """
    Kernel Inception Distance (Bińkowski et al. 2018), as clean-fid / torch-fidelity: unbiased MMD² with the cubic
    polynomial kernel k(x, y) = (x·y / d + 1)³, averaged over `num_subsets` random subsets of `subset_size` rows of
    each set (capped at the smaller set). Defined here because `vapi_trl.evaluation.metrics` has FID and P/R but no
    KID.

    Args:
        real_features, fake_features: `[N, D]` and `[M, D]` float arrays.

    Returns:
        (mean, std) over subsets; ≈ 0 for two samples of one distribution (can be slightly negative).
    """
    real = np.asarray(real_features, dtype=np.float64)
    fake = np.asarray(fake_features, dtype=np.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"Need features [N, D] and [M, D], got {list(real.shape)} and {list(fake.shape)}.")
    size = min(subset_size, len(real), len(fake))
    if size < 2:
        raise ValueError(f"KID needs at least 2 rows per set, got {len(real)} and {len(fake)}.")
    dim = real.shape[1]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(num_subsets):
        x = fake[rng.choice(len(fake), size, replace=False)]
        y = real[rng.choice(len(real), size, replace=False)]
        kxx = (x @ x.T / dim + 1) ** 3
        kyy = (y @ y.T / dim + 1) ** 3
        kxy = (x @ y.T / dim + 1) ** 3
        off_diagonal = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (size * (size - 1))
        values.append(off_diagonal - 2 * kxy.mean())
    return float(np.mean(values)), float(np.std(values))


def distribution_metrics(real_features: np.ndarray, fake_features: np.ndarray, k: int = 3) -> dict[str, float]:
    """
    FID, KID (mean), precision and recall (k-NN, `k`) of fake against real features `[N, D]`.

    For KID both sets are divided by one scalar, the RMS feature norm of the real set over √D, so that x·y/D ≈ 1 as
    for Inception features: on unscaled ReLU features of a small CNN the cubic kernel reaches ~1e6 and the estimate
    is dominated by noise. FID and precision/recall use the raw features.
    """
    fid = frechet_distance(*feature_statistics(real_features), *feature_statistics(fake_features))
    real_features, fake_features = np.asarray(real_features, np.float64), np.asarray(fake_features, np.float64)
    scale = np.sqrt(np.mean(np.sum(real_features**2, axis=1)) / real_features.shape[1])
    kid_mean, _ = kid(real_features / scale, fake_features / scale)
    precision, recall = improved_precision_recall(real_features, fake_features, k=k)
    return {"fid": fid, "kid": kid_mean, "precision": precision, "recall": recall}


# ------------------------------------------------------------------------------------------------------------------
# Generator evaluation
# ------------------------------------------------------------------------------------------------------------------


def balanced_labels(num_samples: int, num_classes: int) -> torch.LongTensor:
    """Labels `i % num_classes`, `[num_samples]` int64: every class equally often."""
    return torch.arange(num_samples) % num_classes


@torch.no_grad()
def free_running_samples(
    policy,
    image_tokenizer,
    labels: torch.LongTensor,
    seed: int,
    batch_size: int = 500,
    progress: bool = False,
    temperature: float = 1.0,
    top_k: int = 0,
) -> np.ndarray:
    """
    KV-cache AR samples (no CFG; τ = 1 and no top-k unless given) for `labels` `[N]`, decoded: uint8 RGB
    `[N, H, W, 3]`.

    Batch `b` draws from a generator seeded with `seed * 100003 + b`, so equal seeds and labels give equal images for
    any policy with the same vocabulary (the comparison uses common random numbers across arms).
    """
    from tqdm.auto import tqdm

    policy.eval()
    device = next(policy.parameters()).device
    images = []
    chunks = labels.split(batch_size)
    for index, chunk in enumerate(tqdm(chunks, desc="sampling", unit="batch", disable=not progress, leave=False)):
        generator = torch.Generator(device=device).manual_seed(seed * 100_003 + index)
        ids = policy.sample(chunk.to(device), temperature=temperature, top_k=top_k, generator=generator)
        images.append(image_tokenizer.batch_decode(ids, output_type="np"))
    return np.concatenate(images)


@torch.no_grad()
def teacher_forced_scores(
    policy,
    image_tokenizer,
    pixels: torch.Tensor,
    labels: torch.LongTensor,
    target_ids: torch.LongTensor,
    seed: int,
    batch_size: int = 500,
) -> dict[str, float]:
    """
    On held-out images: teacher-forced next-token CE (nats/token) of the clean tokens `target_ids` `[N, T]`, and the
    MSE (on the [-1, 1] scale, range [0, 4]) between `pixels` `[N, 3, H, W]` and the decode of one token per position
    drawn from the teacher-forced distribution (τ = 1, generator seeded with `seed`).
    """
    policy.eval()
    device = next(policy.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    ce_sum, mse_sum, count = 0.0, 0.0, 0
    for start in range(0, len(labels), batch_size):
        stop = start + batch_size
        ids, label = target_ids[start:stop].to(device), labels[start:stop].to(device)
        logits = policy(class_labels=label, context_ids=ids[:, :-1]).logits.float()
        ce_sum += F.cross_entropy(logits.flatten(0, 1), ids.flatten(), reduction="sum").item() / ids.shape[1]
        probs = logits.softmax(-1).flatten(0, 1)
        drawn = torch.multinomial(probs, 1, generator=generator).view(ids.shape)
        decoded = image_tokenizer.decode(drawn)
        mse_sum += (decoded - pixels[start:stop].to(decoded.device)).pow(2).mean(dim=(1, 2, 3)).sum().item()
        count += len(label)
    return {"heldout_ce": ce_sum / count, "tf_recon_mse": mse_sum / count}


def classify(classifier: SmallClassifier, images: np.ndarray, batch_size: int = 500) -> dict[str, np.ndarray]:
    """`{"pool": [N, 64], "logits": [N, C]}` of uint8 RGB images `[N, H, W, 3]`."""
    with torch.no_grad():
        return extract_features(images, classifier, batch_size=batch_size)


class SmallBenchmark:
    """
    Scores generators on the embedded data. Built once: encodes the held-out test images and extracts the reference
    features; `evaluate` and `real_floor` then return flat `dict[str, float]`s with the same metric names.

    Args:
        image_tokenizer: the frozen `ImageTokenizerProcessor` of the policies under test.
        feature_classifier, heldout_classifier: `SmallClassifier`s (FID/KID/P-R features; conditional accuracy).
        test_images: uint8 grayscale `[M, 32, 32]`; the first half is the reference set, the second the floor's real
            sample, so `M ≥ 2 · num_samples` gives a floor at the same sample size.
        test_labels: int64 `[M]`.
        num_samples: generated images per evaluation (balanced labels), and size of each real half.
        num_tf_images: held-out images for the teacher-forced scores (from the reference half).
    """

    def __init__(
        self, image_tokenizer, feature_classifier: SmallClassifier, heldout_classifier: SmallClassifier,
        test_images: np.ndarray, test_labels: np.ndarray, num_samples: int = 2000, num_tf_images: int = 1000,
    ) -> None:  # fmt: skip

        if len(test_images) < 2 * num_samples:
            raise ValueError(
                f"The real-vs-real floor needs 2 × num_samples = {2 * num_samples} test images, got "
                f"{len(test_images)}; lower num_samples."
            )
        self.image_tokenizer = image_tokenizer
        self.feature_classifier = feature_classifier
        self.heldout_classifier = heldout_classifier
        self.num_samples = num_samples
        self.num_classes = feature_classifier.config["num_classes"]
        rgb = to_rgb_uint8(test_images)
        self.reference_images, self.floor_images = rgb[:num_samples], rgb[num_samples : 2 * num_samples]
        self.floor_labels = torch.as_tensor(test_labels[num_samples : 2 * num_samples])
        self._floor_gray = test_images[num_samples : 2 * num_samples]
        self.reference_features = classify(feature_classifier, self.reference_images)["pool"]
        count = min(num_tf_images, num_samples)
        self.tf_pixels = to_pixels(test_images[:count])
        self.tf_labels = torch.as_tensor(test_labels[:count])
        self.tf_ids = image_tokenizer.encode(self.tf_pixels)

    def _image_metrics(self, images: np.ndarray, labels: torch.LongTensor) -> dict[str, float]:
        metrics = distribution_metrics(self.reference_features, classify(self.feature_classifier, images)["pool"])
        logits = classify(self.heldout_classifier, images)["logits"]
        metrics["class_accuracy"] = float((logits.argmax(1) == labels.numpy()).mean())
        return metrics

    def evaluate(
        self,
        policy,
        seed: int,
        images: np.ndarray | None = None,
        progress: bool = False,
        temperature: float = 1.0,
        top_k: int = 0,
        teacher_forced: bool = True,
    ) -> dict[str, float]:
        """
        All metrics of `policy` for sampling seed `seed`: fid, kid, precision, recall, class_accuracy (free-running
        samples at `temperature` / `top_k`, τ = 1 and no filter by default), heldout_ce, tf_recon_mse
        (teacher-forced on test images, always τ = 1). Pass `images` (uint8 RGB `[N, H, W, 3]`, balanced labels) to
        score already generated samples; `progress` shows a bar over the sampling batches.

        `teacher_forced=False` leaves out heldout_ce and tf_recon_mse (about a quarter of the time on CPU): they do
        not depend on `temperature` / `top_k`, so a sweep over sampling settings of one policy needs them once.
        """
        labels = balanced_labels(self.num_samples, self.num_classes)
        if images is None:
            images = free_running_samples(
                policy, self.image_tokenizer, labels, seed, progress=progress, temperature=temperature, top_k=top_k
            )
        metrics = self._image_metrics(images, labels)
        if teacher_forced:
            metrics.update(
                teacher_forced_scores(policy, self.image_tokenizer, self.tf_pixels, self.tf_labels, self.tf_ids, seed)
            )
        return metrics

    def real_floor(self) -> dict[str, float]:
        """
        The same metrics for real data: the second test half against the reference half (FID/KID/P/R, held-out
        classifier accuracy), and for the teacher-forced MSE the VQ's own reconstruction error of the test images
        (what a policy that always draws the clean tokens would reach). `heldout_ce` has no real-data floor.
        """
        metrics = self._image_metrics(self.floor_images, self.floor_labels)
        reconstruction = self.image_tokenizer.decode(self.tf_ids)
        metrics["tf_recon_mse"] = (reconstruction - self.tf_pixels).pow(2).mean().item()
        return metrics

    @torch.no_grad()
    def exposure_ladder(self, policy, seed: int, batch_size: int = 500) -> dict[str, dict[str, float]]:
        """
        Where the free-running samples lose quality: FID/KID/P/R/class accuracy against the reference half for
        images built from the *floor* half of the test split (so none is compared with itself):

        - `vq_reconstruction`: the VQ's decode of their clean tokens (the tokenizer's ceiling);
        - `teacher_forced_draw`: one token per position drawn (τ = 1) from `policy` given the clean context, decoded
          (the policy without exposure bias);
        - `free_running`: the policy's own samples for the same labels (what `evaluate` scores).

        The gap between the last two is the exposure bias that VA-π's noisy-context training targets.
        """
        policy.eval()
        device = next(policy.parameters()).device
        pixels = to_pixels(self._floor_gray)
        ids = torch.cat([self.image_tokenizer.encode(chunk) for chunk in pixels.split(batch_size)])
        generator = torch.Generator(device=device).manual_seed(seed)
        reconstructions, draws = [], []
        for start in range(0, len(ids), batch_size):
            chunk, label = ids[start : start + batch_size].to(device), self.floor_labels[start : start + batch_size]
            reconstructions.append(self.image_tokenizer.batch_decode(chunk, output_type="np"))
            logits = policy(class_labels=label.to(device), context_ids=chunk[:, :-1]).logits.float()
            drawn = torch.multinomial(logits.softmax(-1).flatten(0, 1), 1, generator=generator).view(chunk.shape)
            draws.append(self.image_tokenizer.batch_decode(drawn, output_type="np"))
        free = free_running_samples(policy, self.image_tokenizer, self.floor_labels, seed)
        return {
            "vq_reconstruction": self._image_metrics(np.concatenate(reconstructions), self.floor_labels),
            "teacher_forced_draw": self._image_metrics(np.concatenate(draws), self.floor_labels),
            "free_running": self._image_metrics(free, self.floor_labels),
        }


#: The sampling settings `select_sampling` tries by default: a temperature sweep without a filter, and top-k at τ = 1.
SAMPLING_GRID: tuple[tuple[float, int], ...] = (
    (0.7, 0), (0.8, 0), (0.85, 0), (0.9, 0), (0.95, 0), (1.0, 0), (1.0, 32), (1.0, 64), (1.0, 128),
)  # fmt: skip


def select_sampling(
    policy,
    validation: SmallBenchmark,
    seed: int,
    grid: tuple[tuple[float, int], ...] = SAMPLING_GRID,
    metric: str = "fid",
) -> tuple[dict[str, float | int], list[dict[str, float]]]:
    """
    The base's best sampling setting, chosen on a *validation* benchmark (never the test split): the
    `(temperature, top_k)` of `grid` with the lowest `metric` (lower is better; a sample metric, so not heldout_ce
    or tf_recon_mse, which do not depend on the sampling setting and are left out of the sweep).

    Returns:
        `({"temperature": τ, "top_k": k}, sweep)` where `sweep` lists every setting with its sample metrics.
    """
    if metric in TEACHER_FORCED_METRICS:
        raise ValueError(
            f"metric={metric!r} does not depend on the sampling setting (teacher-forced); choose by a sample metric "
            "such as 'fid' or 'kid'."
        )
    sweep = []
    for temperature, top_k in grid:
        metrics = validation.evaluate(policy, seed=seed, temperature=temperature, top_k=top_k, teacher_forced=False)
        sweep.append({"temperature": temperature, "top_k": top_k, **metrics})
    best = min(sweep, key=lambda row: row[metric])
    return {"temperature": best["temperature"], "top_k": best["top_k"]}, sweep


def summarize(runs: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per metric: mean and sample std (n−1; 0 for one run) over runs, and the number of runs."""
    keys = runs[0].keys()
    summary = {}
    for key in keys:
        values = np.array([run[key] for run in runs], dtype=np.float64)
        summary[key] = {
            "mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            "n": len(values),
        }
    return summary


def train_classifier(
    images: np.ndarray, labels: np.ndarray, seed: int, epochs: int = 10, batch_size: int = 128, lr: float = 1e-3
) -> tuple[SmallClassifier, dict[str, Any]]:
    """
    Train a `SmallClassifier` with Adam and cross-entropy on uint8 grayscale `[N, 32, 32]` images (no augmentation).

    Returns:
        The classifier (eval mode, frozen) and `{"final_train_loss": float, "epochs": int, ...}`.
    """
    torch.manual_seed(seed)
    model = SmallClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    x = torch.from_numpy(images).float().div(127.5).sub(1.0)[:, None]
    y = torch.from_numpy(labels).long()
    generator = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            index = order[start : start + batch_size]
            loss = F.cross_entropy(model(x[index])["logits"], y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    tail = losses[-max(1, len(losses) // 10) :]
    return model.eval().requires_grad_(False), {
        "final_train_loss": float(np.mean(tail)), "epochs": epochs, "batch_size": batch_size, "lr": lr,
        "num_images": len(x), "seed": seed,
    }  # fmt: skip


__all__ = [
    "SmallBenchmark",
    "SmallClassifier",
    "balanced_labels",
    "classify",
    "distribution_metrics",
    "free_running_samples",
    "kid",
    "SAMPLING_GRID",
    "TEACHER_FORCED_METRICS",
    "select_sampling",
    "summarize",
    "teacher_forced_scores",
    "train_classifier",
]
