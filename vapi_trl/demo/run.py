"""`vapi-trl demo`: VA-π end to end on the embedded Fashion-MNIST subset and the shipped tiny generator, on CPU.

Loads the embedded base (VQ + LlamaGen policy) and data, scores free-running samples before training, runs
`VAPiTrainer` for a few steps, scores again with the same sampling seeds and labels, and writes to `output_dir`:

- `report.json`: settings, before/after metrics (see `vapi_trl.evaluation.small_benchmark`), the real-data floor of
  each metric, the last training logs and wall-clock timings;
- `samples_before.png`, `samples_after.png`: free-running samples, one row per class, identical seeds and labels;
- `policy/`: the aligned policy (`save_pretrained`, safetensors) and `image_tokenizer/`, the frozen VQ it decodes with.

The reward is `−(MSE + LPIPS-VGG)` when the LPIPS backbone weights are in the local torch cache, otherwise `−MSE`
alone (`lpips_weight=0`); a randomly initialised LPIPS network is never used.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


@dataclass
class DemoSettings:
    """
    What `run_demo` does; written to `report.json`.

    Args:
        steps: optimizer steps of VA-π.
        num_images: source images per step (U); each gets `num_generations` teacher-forced samples (G).
        num_generations: G, samples per image (group size of the advantages).
        learning_rate: AdamW learning rate (constant).
        context_noise_prob: ξ, context corruption probability.
        ce_coef: β, weight of the clean-token cross-entropy prior.
        eval_samples: free-running samples per evaluation (balanced labels); the test split must hold twice as many.
        grid_per_class: samples per class in the PNG grids.
        seed: training seed and sampling seed of the evaluations and grids.
        train_images: images of the embedded `train` split the trainer draws from.
    """

    steps: int = 50
    num_images: int = 8
    num_generations: int = 8
    learning_rate: float = 1e-4
    context_noise_prob: float = 0.5
    ce_coef: float = 0.1
    eval_samples: int = 2000
    grid_per_class: int = 10
    seed: int = 0
    train_images: int = 5000

    def __post_init__(self) -> None:
        for name in ("steps", "num_images", "num_generations", "eval_samples", "grid_per_class", "train_images"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}.")
        if self.num_generations < 2:
            raise ValueError(
                f"num_generations must be ≥ 2 (advantages are normalised within a group), got {self.num_generations}."
            )
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be a finite number > 0, got {self.learning_rate}.")
        if not 0.0 <= self.context_noise_prob <= 1.0:
            raise ValueError(f"context_noise_prob (ξ) must be in [0, 1], got {self.context_noise_prob}.")
        if not (math.isfinite(self.ce_coef) and self.ce_coef >= 0):
            raise ValueError(f"ce_coef (β) must be a finite number ≥ 0, got {self.ce_coef}.")
        if self.eval_samples > 2000:
            raise ValueError(
                f"eval_samples must be ≤ 2000 (the held-out test split holds 2 × 2000 images), got "
                f"{self.eval_samples}."
            )
        if self.eval_samples < 20:
            raise ValueError(
                f"eval_samples must be ≥ 20 (precision/recall and FID need a few per class), got {self.eval_samples}."
            )


def lpips_available(net: str = "vgg") -> bool:
    """Whether the ImageNet backbone of LPIPS-`net` is in the local torch cache (no download is attempted)."""
    from vapi_trl.rewards import lpips_backbone_path

    return os.path.isfile(lpips_backbone_path(net))


def save_grid(images: np.ndarray, path: str, columns: int, scale: int = 2) -> None:
    """Tile uint8 RGB images `[N, H, W, 3]` row-major in `columns` columns (1 px gap); save a PNG upscaled ×scale."""
    from PIL import Image

    count, height, width, _ = images.shape
    rows = (count + columns - 1) // columns
    canvas = np.full((rows * (height + 1) + 1, columns * (width + 1) + 1, 3), 255, dtype=np.uint8)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        top, left = 1 + row * (height + 1), 1 + column * (width + 1)
        canvas[top : top + height, left : left + width] = image
    picture = Image.fromarray(canvas)
    picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST).save(path)


def grid_samples(policy, image_tokenizer, num_classes: int, per_class: int, seed: int) -> np.ndarray:
    """Free-running samples, one row per class (`per_class` each), fixed seed: uint8 RGB `[C·per_class, H, W, 3]`."""
    import torch

    from vapi_trl.evaluation.small_benchmark import free_running_samples

    labels = torch.arange(num_classes).repeat_interleave(per_class)
    return free_running_samples(policy, image_tokenizer, labels, seed=seed + 7919)


def run_demo(
    output_dir: str, settings: DemoSettings | None = None, progress: bool = True, overwrite: bool = False
) -> dict[str, Any]:
    """
    Run the demo and write its outputs (see the module docstring) to `output_dir`, which must be empty or missing
    unless `overwrite`.

    Returns:
        The report written to `report.json`.
    """
    settings = settings or DemoSettings()
    if os.path.isdir(output_dir) and os.listdir(output_dir) and not overwrite:
        raise ValueError(
            f"--output_dir {output_dir!r} is not empty ({', '.join(sorted(os.listdir(output_dir))[:3])}, ...); the demo "
            "would overwrite its report, grids and policy. Pick another folder, or pass --overwrite."
        )
    os.makedirs(output_dir, exist_ok=True)
    timings: dict[str, float] = {}
    started = time.perf_counter()

    def say(message: str) -> None:
        if progress:
            print(f"[{time.perf_counter() - started:6.1f}s] {message}", flush=True)

    mark = time.perf_counter()
    policy, image_tokenizer, train_dataset, benchmark = _load_embedded(settings)
    timings["load_s"] = time.perf_counter() - mark
    use_lpips = lpips_available("vgg")
    if use_lpips:
        say("LPIPS-VGG backbone found in the torch cache: reward = −(MSE + LPIPS).")
    else:
        say(
            "LPIPS-VGG backbone weights are not in the local torch cache (see `vapi_trl.rewards.ensure_lpips_backbone`"
            "): training with the MSE term alone (lpips_weight=0)."
        )

    # The training arguments first: a bad value fails now, not after a minute of scoring.
    args = _training_args(settings, output_dir, use_lpips, progress)
    num_classes = policy.config.num_classes

    def score(policy, when: str) -> dict[str, float]:
        """Benchmark metrics of `policy` and its sample grid `samples_{when}.png`, same seeds and labels each time."""
        mark = time.perf_counter()
        metrics = benchmark.evaluate(policy, seed=settings.seed, progress=progress)
        save_grid(
            grid_samples(policy, image_tokenizer, num_classes, settings.grid_per_class, settings.seed),
            os.path.join(output_dir, f"samples_{when}.png"), columns=settings.grid_per_class,
        )  # fmt: skip
        timings[f"evaluate_{when}_s"] = time.perf_counter() - mark
        return metrics

    say(f"Scoring the base policy on {settings.eval_samples} free-running samples ...")
    before = score(policy, "before")
    floor = benchmark.real_floor()

    mark = time.perf_counter()
    say(f"VA-π: {settings.steps} steps of {settings.num_images} images × G={settings.num_generations} ...")
    policy, logs = _align(policy, args, train_dataset, image_tokenizer, progress)
    timings["train_s"] = time.perf_counter() - mark
    timings["train_step_s"] = timings["train_s"] / settings.steps

    say("Scoring the aligned policy with the same seeds and labels ...")
    after = score(policy, "after")

    mark = time.perf_counter()
    policy.save_pretrained(os.path.join(output_dir, "policy"))
    image_tokenizer.save_pretrained(os.path.join(output_dir, "image_tokenizer"))
    timings["save_s"] = time.perf_counter() - mark
    timings["total_s"] = time.perf_counter() - started

    report = _report(settings, use_lpips, args.lpips_weight, before, after, floor, logs, timings)
    with open(os.path.join(output_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=2, ensure_ascii=False)
    return report


def _load_embedded(settings: DemoSettings):
    """The shipped base policy and image tokenizer, the training rows and the benchmark on the held-out split."""
    from vapi_trl.demo import embedded
    from vapi_trl.evaluation.small_benchmark import SmallBenchmark

    image_tokenizer = embedded.load_image_tokenizer()
    feature_classifier, heldout_classifier = embedded.load_classifiers()
    test_images, test_labels = embedded.load_arrays("test")
    benchmark = SmallBenchmark(
        image_tokenizer, feature_classifier, heldout_classifier, test_images, test_labels,
        num_samples=settings.eval_samples,
    )  # fmt: skip
    train_dataset = embedded.load_dataset("train", limit=settings.train_images)
    return embedded.load_policy(), image_tokenizer, train_dataset, benchmark


def _training_args(settings: DemoSettings, output_dir: str, use_lpips: bool, progress: bool):
    """The demo's `VAPiConfig`: the settings' geometry and learning rate, reward −(MSE [+ LPIPS-VGG]), no saving."""
    import torch

    from vapi_trl import VAPiConfig

    return VAPiConfig(
        output_dir=os.path.join(output_dir, "trainer"),
        max_steps=settings.steps,
        per_device_train_batch_size=settings.num_images * settings.num_generations,
        num_generations=settings.num_generations,
        learning_rate=settings.learning_rate,
        context_noise_prob=settings.context_noise_prob,
        ce_coef=settings.ce_coef,
        pixel_weight=1.0,
        lpips_weight=1.0 if use_lpips else 0.0,
        lpips_net="vgg",
        bf16=False,
        use_cpu=not torch.cuda.is_available(),
        report_to="none",
        save_strategy="no",
        logging_steps=max(1, settings.steps // 10),
        disable_tqdm=not progress,
        seed=settings.seed,
        dataloader_num_workers=0,
    )


def _align(policy, args, train_dataset, image_tokenizer, progress: bool):
    """VA-π on `policy`; returns the aligned policy in eval mode and the logged training entries."""
    from vapi_trl import VAPiTrainer

    policy.train()
    trainer = VAPiTrainer(model=policy, args=args, train_dataset=train_dataset, image_tokenizer=image_tokenizer)
    if not progress:  # without a progress bar, Trainer prints every log dict instead: the report holds them anyway
        from transformers import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    trainer.train()
    return trainer.policy.eval(), [entry for entry in trainer.state.log_history if "loss" in entry]


def _report(settings, use_lpips, lpips_weight, before, after, floor, logs, timings) -> dict[str, Any]:
    """The `report.json` content: settings, before/after/floor metrics, training logs, timings, environment."""
    import torch

    return {
        "settings": asdict(settings),
        "reward": "-(MSE + LPIPS-VGG)" if use_lpips else "-MSE (LPIPS backbone weights not available locally)",
        "lpips_weight": lpips_weight,
        "metrics": {
            "before": before,
            "after": after,
            "delta": {key: after[key] - before[key] for key in before},
            "real_floor": floor,
            "lower_is_better": ["fid", "kid", "heldout_ce", "tf_recon_mse"],
            "higher_is_better": ["precision", "recall", "class_accuracy"],
            "notes": (
                "Free-running samples: KV-cache sampling, τ=1, no top-k/top-p, no CFG, balanced labels, same seed "
                "before and after. FID/KID/precision/recall on SmallClassifier features against the first half of "
                "the held-out test split; class_accuracy by a classifier trained on a disjoint split; heldout_ce and "
                "tf_recon_mse (MSE on the [-1, 1] scale of one teacher-forced draw per position, decoded) on test "
                "images. real_floor: second test half vs first (tf_recon_mse: the VQ's own reconstruction error)."
            ),
        },
        "training_logs": [
            {
                key: entry[key]
                for key in ("step", "loss", "reward", "mse", "ce", "token_accuracy", "entropy")
                if key in entry
            }
            for entry in logs
        ],
        "timings": timings,
        "outputs": {
            "report": "report.json",
            "samples_before": "samples_before.png",
            "samples_after": "samples_after.png",
            "policy": "policy",
            "image_tokenizer": "image_tokenizer",
        },
        "environment": {
            "device": "cuda" if torch.cuda.is_available() else "cpu",
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }


def format_report(report: dict[str, Any]) -> str:
    """Before / after / real-floor table of a demo report, for the terminal."""
    metrics = report["metrics"]
    lines = [f"{'metric':<16}{'before':>12}{'after':>12}{'real floor':>12}"]
    for key, value in metrics["before"].items():
        floor = metrics["real_floor"].get(key)
        shown = f"{floor:>12.4f}" if floor is not None else f"{'—':>12}"
        arrow = "↓" if key in metrics["lower_is_better"] else "↑"
        lines.append(f"{key + ' ' + arrow:<16}{value:>12.4f}{metrics['after'][key]:>12.4f}{shown}")
    timings = report["timings"]
    lines.append(
        f"reward: {report['reward']}; train {timings['train_s']:.1f}s ({timings['train_step_s']:.2f}s/step), "
        f"total {timings['total_s']:.1f}s"
    )
    return "\n".join(lines)


__all__ = ["DemoSettings", "format_report", "grid_samples", "lpips_available", "run_demo", "save_grid"]
