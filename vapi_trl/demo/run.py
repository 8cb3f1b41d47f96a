"""`vapi-trl demo`: VA-π end to end on the embedded Fashion-MNIST subset and the shipped tiny generator, on CPU.

Loads the embedded base (VQ + LlamaGen policy, 8×8 tokens, 512 codes) and data, scores free-running samples before
training, chooses the base's best sampling temperature / top-k on the *validation* split and scores the base at that
setting too (the baseline a skeptic asks for: is VA-π more than a cheaper temperature?), runs `VAPiTrainer`, scores
again at τ = 1 with the same sampling seeds and labels, and writes to `output_dir`:

- `report.json`: settings, the metrics of the base, the temperature-tuned base and the aligned policy (see
  `vapi_trl.evaluation.small_benchmark`), the real-data floor of each metric, the validation sweep, the last
  training logs and wall-clock timings;
- `side_by_side.png`: base | aligned, the same labels and sampling seeds, one row per class;
- `samples_before.png`, `samples_tuned_base.png`, `samples_after.png`: the three grids on their own;
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
        learning_rate: AdamW learning rate (constant); 1e-6, the paper's LlamaGen value, was also the best of
            {1e-6, 3e-6, 1e-5, 1e-4} on the validation split (`docs/small_benchmark.md`).
        context_noise_prob: ξ, context corruption probability.
        ce_coef: β, weight of the clean-token cross-entropy prior.
        eval_samples: free-running samples per evaluation (balanced labels); the test split must hold twice as many.
        val_samples: samples per validation evaluation of the sampling-setting sweep (the validation split holds
            2 × 1000 images); with 500 the sweep picked τ = 0.7, worse than τ = 1 on test, with 1000 it picks the
            benchmark's τ = 0.8.
        teacher_forced_images: held-out test images of the teacher-forced scores (heldout_ce, tf_recon_mse).
        grid_per_class: samples per class in the PNG grids.
        seed: training seed and sampling seed of the evaluations and grids.
        train_images: images of the embedded `train` split the trainer draws from.
    """

    steps: int = 50
    num_images: int = 8
    num_generations: int = 8
    learning_rate: float = 1e-6
    context_noise_prob: float = 0.5
    ce_coef: float = 0.1
    eval_samples: int = 1000
    val_samples: int = 1000
    teacher_forced_images: int = 500
    grid_per_class: int = 10
    seed: int = 0
    train_images: int = 5000

    def __post_init__(self) -> None:
        for name in (
            "steps", "num_images", "num_generations", "eval_samples", "val_samples", "grid_per_class", "train_images",
            "teacher_forced_images",
        ):  # fmt: skip
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
        if not 20 <= self.val_samples <= 1000:
            raise ValueError(
                f"val_samples must be in [20, 1000] (the validation split holds 2 × 1000 images), got "
                f"{self.val_samples}."
            )
        if self.eval_samples < 20:
            raise ValueError(
                f"eval_samples must be ≥ 20 (precision/recall and FID need a few per class), got {self.eval_samples}."
            )


#: The demo's validation sweep: the temperatures of the benchmark's grid that matter on this base (τ = 0.8 won there,
#: and top-k never beat it), kept short so that the demo stays within 3 minutes on 2 CPU cores.
DEMO_SAMPLING_GRID: tuple[tuple[float, int], ...] = ((0.8, 0), (0.9, 0), (1.0, 0))


def lpips_available(net: str = "vgg") -> bool:
    """Whether the ImageNet backbone of LPIPS-`net` is in the local torch cache (no download is attempted)."""
    from vapi_trl.rewards import lpips_backbone_path

    return os.path.isfile(lpips_backbone_path(net))


def tile(images: np.ndarray, columns: int, scale: int = 2):
    """uint8 RGB images `[N, H, W, 3]` row-major in `columns` columns (1 px white gap), as a PIL image upscaled ×scale."""
    from PIL import Image

    count, height, width, _ = images.shape
    rows = (count + columns - 1) // columns
    canvas = np.full((rows * (height + 1) + 1, columns * (width + 1) + 1, 3), 255, dtype=np.uint8)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        top, left = 1 + row * (height + 1), 1 + column * (width + 1)
        canvas[top : top + height, left : left + width] = image
    picture = Image.fromarray(canvas)
    return picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)


def save_grid(images: np.ndarray, path: str, columns: int, scale: int = 2) -> None:
    """`tile` saved as a PNG."""
    tile(images, columns, scale).save(path)


def grid_samples(
    policy, image_tokenizer, num_classes: int, per_class: int, seed: int, temperature: float = 1.0, top_k: int = 0
) -> np.ndarray:
    """Free-running samples, one row per class (`per_class` each), fixed seed: uint8 RGB `[C·per_class, H, W, 3]`."""
    import torch

    from vapi_trl.evaluation.small_benchmark import free_running_samples

    labels = torch.arange(num_classes).repeat_interleave(per_class)
    return free_running_samples(
        policy, image_tokenizer, labels, seed=seed + 7919, temperature=temperature, top_k=top_k
    )


def save_side_by_side(panels: dict[str, np.ndarray], path: str, columns: int, scale: int = 3) -> None:
    """
    Grids of uint8 RGB images `[N, H, W, 3]` (same count each) side by side, each under its caption, one PNG.
    """
    from PIL import Image, ImageDraw

    tiles = [tile(images, columns, scale) for images in panels.values()]
    gap, header = 12, 22
    picture = Image.new("RGB", (sum(t.width for t in tiles) + gap * (len(tiles) + 1), tiles[0].height + header + gap),
                        "white")  # fmt: skip
    draw = ImageDraw.Draw(picture)
    left = gap
    for caption, panel in zip(panels, tiles):
        draw.text((left, 4), caption, fill="black")
        picture.paste(panel, (left, header))
        left += panel.width + gap
    picture.save(path)


def run_demo(
    output_dir: str, settings: DemoSettings | None = None, progress: bool = True, overwrite: bool = False
) -> dict[str, Any]:
    """
    Run the demo and write its outputs (see the module docstring) to `output_dir`, which must be empty or missing
    unless `overwrite`.

    Returns:
        The report written to `report.json`.
    """
    from vapi_trl.evaluation.small_benchmark import TEACHER_FORCED_METRICS, select_sampling

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
    policy, image_tokenizer, train_dataset, benchmark, validation = _load_embedded(settings)
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

    grids: dict[str, np.ndarray] = {}

    def score(
        policy, when: str, temperature: float = 1.0, top_k: int = 0, teacher_forced: bool = True
    ) -> dict[str, float]:
        """Benchmark metrics of `policy` and its sample grid `samples_{when}.png`, same seeds and labels each time."""
        mark = time.perf_counter()
        metrics = benchmark.evaluate(
            policy, seed=settings.seed, progress=progress, temperature=temperature, top_k=top_k,
            teacher_forced=teacher_forced,
        )  # fmt: skip
        grids[when] = grid_samples(
            policy, image_tokenizer, num_classes, settings.grid_per_class, settings.seed, temperature, top_k
        )
        save_grid(grids[when], os.path.join(output_dir, f"samples_{when}.png"), columns=settings.grid_per_class)
        timings[f"evaluate_{when}_s"] = time.perf_counter() - mark
        return metrics

    say(f"Scoring the base policy on {settings.eval_samples} free-running samples ...")
    before = score(policy, "before")
    floor = benchmark.real_floor()

    mark = time.perf_counter()
    say(
        f"Choosing the base's sampling temperature / top-k on the validation split ({settings.val_samples} samples) ..."
    )
    chosen, sweep = select_sampling(policy, validation, seed=settings.seed, grid=DEMO_SAMPLING_GRID)
    timings["select_sampling_s"] = time.perf_counter() - mark
    say(f"Scoring the base at τ={chosen['temperature']}, top-k={chosen['top_k'] or 'off'} ...")
    # Teacher-forced scores ignore the sampling setting: the tuned base's are the base's (same policy and seed).
    tuned = score(policy, "tuned_base", **chosen, teacher_forced=False)
    tuned.update({key: before[key] for key in TEACHER_FORCED_METRICS})

    mark = time.perf_counter()
    say(f"VA-π: {settings.steps} steps of {settings.num_images} images × G={settings.num_generations} ...")
    policy, logs = _align(policy, args, train_dataset, image_tokenizer, progress)
    timings["train_s"] = time.perf_counter() - mark
    timings["train_step_s"] = timings["train_s"] / settings.steps

    say("Scoring the aligned policy with the same seeds and labels (τ = 1, no top-k) ...")
    after = score(policy, "after")
    save_side_by_side(
        # ASCII captions: PIL's built-in font has no τ or π.
        {"base (temperature 1)": grids["before"], f"aligned, {settings.steps} VA-pi steps (temperature 1)": grids["after"]},
        os.path.join(output_dir, "side_by_side.png"), columns=settings.grid_per_class,
    )  # fmt: skip

    mark = time.perf_counter()
    policy.save_pretrained(os.path.join(output_dir, "policy"))
    image_tokenizer.save_pretrained(os.path.join(output_dir, "image_tokenizer"))
    timings["save_s"] = time.perf_counter() - mark
    timings["total_s"] = time.perf_counter() - started

    selection = {"chosen": chosen, "criterion": "lowest FID on the validation split", "validation_sweep": sweep}
    report = _report(settings, use_lpips, args.lpips_weight, before, tuned, after, floor, selection, logs, timings)
    with open(os.path.join(output_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=2, ensure_ascii=False)
    return report


def _load_embedded(settings: DemoSettings):
    """The shipped base policy and image tokenizer, the training rows, the test and the validation benchmarks."""
    from vapi_trl.demo import embedded
    from vapi_trl.evaluation.small_benchmark import SmallBenchmark

    image_tokenizer = embedded.load_image_tokenizer()
    feature_classifier, heldout_classifier = embedded.load_classifiers()
    benchmarks = []
    for split, samples in (("test", settings.eval_samples), ("val", settings.val_samples)):
        images, labels = embedded.load_arrays(split)
        benchmarks.append(
            SmallBenchmark(
                image_tokenizer,
                feature_classifier,
                heldout_classifier,
                images,
                labels,
                num_samples=samples,
                num_tf_images=settings.teacher_forced_images,
            )
        )
    train_dataset = embedded.load_dataset("train", limit=settings.train_images)
    return embedded.load_policy(), image_tokenizer, train_dataset, *benchmarks


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


def _report(
    settings, use_lpips, lpips_weight, before, tuned, after, floor, selection, logs, timings
) -> dict[str, Any]:
    """The `report.json` content: settings, base/tuned base/after/floor metrics, training logs, timings, environment."""
    import torch

    return {
        "settings": asdict(settings),
        "reward": "-(MSE + LPIPS-VGG)" if use_lpips else "-MSE (LPIPS backbone weights not available locally)",
        "lpips_weight": lpips_weight,
        "metrics": {
            "before": before,
            "tuned_base": tuned,
            "after": after,
            "delta": {key: after[key] - before[key] for key in before},
            "delta_vs_tuned_base": {key: after[key] - tuned[key] for key in tuned},
            "real_floor": floor,
            "lower_is_better": ["fid", "kid", "heldout_ce", "tf_recon_mse"],
            "higher_is_better": ["precision", "recall", "class_accuracy"],
            "notes": (
                "Free-running samples: KV-cache sampling, no CFG, balanced labels, same seed for every column; τ=1 "
                "and no top-k before and after, the validation-chosen τ/top-k for tuned_base. FID/KID/precision/recall on SmallClassifier features against the first half of "
                "the held-out test split; class_accuracy by a classifier trained on a disjoint split; heldout_ce and "
                "tf_recon_mse (MSE on the [-1, 1] scale of one teacher-forced draw per position, decoded) on test "
                "images. real_floor: second test half vs first (tf_recon_mse: the VQ's own reconstruction error)."
            ),
        },
        "sampling_selection": selection,
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
            "side_by_side": "side_by_side.png",
            "samples_before": "samples_before.png",
            "samples_tuned_base": "samples_tuned_base.png",
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


def fid_reading(base_fid: float, tuned_fid: float, aligned_fid: float) -> str:
    """
    Two lines for the terminal: what this run's FIDs say, and where the multi-seed answer is.

    A single demo run (one seed, 1 000 samples) cannot separate a few FID points from noise, so the sentence states
    the measured changes and points to the benchmark, which found no VA-π gain on this base (issue 15).
    """

    def change(fid: float) -> str:
        relative = (fid - base_fid) / base_fid
        return f"{fid - base_fid:+.2f} FID ({relative:+.1%})"

    verdict = "lower" if aligned_fid < min(base_fid, tuned_fid) else "not lower"
    return (
        f"this run (one seed): aligned vs base {change(aligned_fid)}, tuned base vs base {change(tuned_fid)}; the "
        f"aligned FID is {verdict} than both.\n"
        "the 3-seed benchmark on this base found no VA-π gain, and a validation-chosen temperature does better: "
        "docs/small_benchmark.md"
    )


def format_report(report: dict[str, Any]) -> str:
    """Base / temperature-tuned base / aligned / real-floor table of a demo report, for the terminal."""
    metrics = report["metrics"]
    chosen = report["sampling_selection"]["chosen"]
    tuned = f"τ={chosen['temperature']:g},k={chosen['top_k'] or '-'}"
    lines = [f"{'metric':<16}{'base':>12}{tuned:>14}{'aligned':>12}{'real floor':>12}"]
    for key, value in metrics["before"].items():
        floor = metrics["real_floor"].get(key)
        shown = f"{floor:>12.4f}" if floor is not None else f"{'—':>12}"
        arrow = "↓" if key in metrics["lower_is_better"] else "↑"
        lines.append(
            f"{key + ' ' + arrow:<16}{value:>12.4f}{metrics['tuned_base'][key]:>14.4f}{metrics['after'][key]:>12.4f}"
            f"{shown}"
        )
    lines.append("base and aligned sampled at τ=1, no top-k; the tuned base at the validation-chosen setting.")
    lines.append(fid_reading(metrics["before"]["fid"], metrics["tuned_base"]["fid"], metrics["after"]["fid"]))
    timings = report["timings"]
    lines.append(
        f"reward: {report['reward']}; train {timings['train_s']:.1f}s ({timings['train_step_s']:.2f}s/step), "
        f"total {timings['total_s']:.1f}s"
    )
    return "\n".join(lines)


__all__ = [
    "DEMO_SAMPLING_GRID",
    "DemoSettings",
    "fid_reading",
    "format_report",
    "grid_samples",
    "lpips_available",
    "run_demo",
    "save_grid",
    "save_side_by_side",
    "tile",
]
