"""Small-scale reproduction of VA-π's claim on the embedded Fashion-MNIST default, every arm measured side by side.

Arms (same base policy, same steps, same images per step, same training subset and seeds):

- `base`: the shipped pretrained policy, untouched;
- `ce_only`: teacher-forced cross-entropy fine-tuning on the ξ-corrupted context (VA-π's β term alone, policy term
  off), with VA-π's optimizer (AdamW, same lr, betas, weight decay, grad clip 1.0). `VAPiConfig` cannot switch
  the policy-gradient term off (pixel_weight = lpips_weight = 0 is rejected), so this arm is a plain training loop;
- `vapi`: VA-π, ξ = 0.5, β = 0.1 (project defaults), reward −MSE (LPIPS backbone weights are not available offline;
  with them, pass `--lpips`);
- `reward_only`: β = 0, the paper's collapse case;
- ablations: ξ ∈ {0, 1} and β ∈ {0.01, 1.0} around the `vapi` arm (ξ = 0.5, β = 0.1);
- budget: the `vapi` arm with 3× the steps (`vapi_3x_steps`) and with 3× the learning rate (`vapi_3x_lr`).

Each trained arm is run once per seed (the seed sets the trainer's data order, context noise and sample draws) and
scored with the same sampling seed, so arms share labels and random numbers. Metrics: see
`vapi_trl.evaluation.small_benchmark`; `real_floor` is the real-vs-real value of each metric. Example:

    python benchmarks/reproduce_small.py --json docs/results/small_benchmark.json \
        --plot docs/results/small_benchmark.png
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import torch

ARMS: dict[str, dict] = {
    "base": {},
    "ce_only": {"ce_only": True, "context_noise_prob": 0.5},
    "vapi": {"context_noise_prob": 0.5, "ce_coef": 0.1},
    "reward_only": {"context_noise_prob": 0.5, "ce_coef": 0.0},
    "xi_0.0": {"context_noise_prob": 0.0, "ce_coef": 0.1},
    "xi_1.0": {"context_noise_prob": 1.0, "ce_coef": 0.1},
    "beta_0.01": {"context_noise_prob": 0.5, "ce_coef": 0.01},
    "beta_1.0": {"context_noise_prob": 0.5, "ce_coef": 1.0},
    # Sensitivity of the main arm to the training budget: 3× the steps, and 3× the learning rate.
    "vapi_3x_steps": {"context_noise_prob": 0.5, "ce_coef": 0.1, "steps_multiplier": 3},
    "vapi_3x_lr": {"context_noise_prob": 0.5, "ce_coef": 0.1, "lr_multiplier": 3},
}
METRICS = ("fid", "kid", "precision", "recall", "class_accuracy", "heldout_ce", "tf_recon_mse")
LOWER_IS_BETTER = ("fid", "kid", "heldout_ce", "tf_recon_mse")


def train_dataset_with_codes(image_tokenizer, limit: int):
    """The embedded train split with a `gt_ids` column (codes encoded once, so arms skip the VQ encode)."""
    from vapi_trl.demo import embedded

    images, _ = embedded.load_arrays("train", limit)
    pixels = embedded.to_pixels(images)
    codes = torch.cat([image_tokenizer.encode(chunk) for chunk in pixels.split(500)])
    dataset = embedded.load_dataset("train", limit)
    return dataset.add_column("gt_ids", codes.tolist()), codes


def train_ce_only(policy, codes: torch.Tensor, labels: torch.Tensor, args, context_noise_prob: float, seed: int):
    """CE fine-tuning on ξ-corrupted contexts with the VA-π optimizer settings; `args.num_images` images per step."""
    from vapi_trl.objective import ce_prior, corrupt_context

    torch.manual_seed(seed)
    decay = [p for n, p in policy.named_parameters() if p.requires_grad and "norm" not in n and "bias" not in n]
    rest = [p for n, p in policy.named_parameters() if p.requires_grad and ("norm" in n or "bias" in n)]
    # Same as the HF Trainer's AdamW for VAPiConfig defaults: weight decay 0 unless set, betas (0.9, 0.999).
    optimizer = torch.optim.AdamW([{"params": decay}, {"params": rest}], lr=args.learning_rate, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    policy.train()
    order = torch.randperm(len(codes), generator=generator)
    for step in range(args.steps):
        index = order[(step * args.num_images) % len(codes) :][: args.num_images]
        ids = codes[index]
        context = corrupt_context(ids, context_noise_prob, policy.codebook_size)
        logits = policy(class_labels=labels[index], context_ids=context).logits
        loss = ce_prior(logits, ids)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        optimizer.step()
    return policy.eval()


def train_vapi(
    policy,
    image_tokenizer,
    dataset,
    args,
    context_noise_prob: float,
    ce_coef: float,
    seed: int,
    steps_multiplier: int = 1,
    lr_multiplier: float = 1.0,
):
    from vapi_trl import VAPiConfig, VAPiTrainer

    with tempfile.TemporaryDirectory() as output_dir:
        config = VAPiConfig(
            output_dir=output_dir, max_steps=args.steps * steps_multiplier,
            learning_rate=args.learning_rate * lr_multiplier,
            per_device_train_batch_size=args.num_images * args.num_generations, num_generations=args.num_generations,
            context_noise_prob=context_noise_prob, ce_coef=ce_coef, lpips_weight=1.0 if args.lpips else 0.0,
            bf16=False, use_cpu=not torch.cuda.is_available(), report_to="none", save_strategy="no",
            logging_steps=max(1, args.steps // 5), disable_tqdm=True, seed=seed, dataloader_num_workers=0,
        )  # fmt: skip
        policy.train()
        trainer = VAPiTrainer(model=policy, args=config, train_dataset=dataset, image_tokenizer=image_tokenizer)
        trainer.train()
        logs = [entry for entry in trainer.state.log_history if "loss" in entry]
        return trainer.policy.eval(), logs


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(results["arms"])
    fig, axes = plt.subplots(2, 4, figsize=(18, 7.5))
    for axis, metric in zip(axes.flat, METRICS):
        means = [results["arms"][arm]["summary"][metric]["mean"] for arm in arms]
        stds = [results["arms"][arm]["summary"][metric]["std"] for arm in arms]
        colors = ["#888888" if arm == "base" else "#1f77b4" if arm == "vapi" else "#aec7e8" for arm in arms]
        axis.bar(range(len(arms)), means, yerr=stds, color=colors, capsize=3)
        floor = results["real_floor"].get(metric)
        if floor is not None:
            axis.axhline(floor, color="green", linestyle="--", linewidth=1, label="real floor")
            axis.legend(fontsize=8)
        axis.set_xticks(range(len(arms)), arms, rotation=45, ha="right", fontsize=8)
        axis.set_title(f"{metric} ({'lower' if metric in LOWER_IS_BETTER else 'higher'} is better)", fontsize=10)
    axes.flat[-1].axis("off")
    axes.flat[-1].text(
        0, 0.5,
        f"{results['settings']['steps']} steps, U={results['settings']['num_images']}, "
        f"G={results['settings']['num_generations']}, lr={results['settings']['learning_rate']}\n"
        f"{len(results['settings']['seeds'])} seeds, {results['settings']['eval_samples']} samples/eval\n"
        "error bars: std over seeds",
        fontsize=10,
    )  # fmt: skip
    fig.suptitle("Small benchmark (embedded Fashion-MNIST, tiny LlamaGen): mean ± std over seeds")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", default=None, help="Write the results to this JSON file.")
    parser.add_argument("--plot", default=None, help="Write a bar chart of every metric (PNG) here.")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--num-images", type=int, default=8, help="U: images per step.")
    parser.add_argument("--num-generations", type=int, default=8, help="G: samples per image.")
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--train-images", type=int, default=5000)
    parser.add_argument("--eval-samples", type=int, default=2000)
    parser.add_argument("--lpips", action="store_true", help="Add LPIPS-VGG to the reward (needs cached weights).")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads; 1 is fastest for the tiny model on a shared machine.",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from vapi_trl.demo import embedded
    from vapi_trl.evaluation.small_benchmark import SmallBenchmark, summarize

    started = time.perf_counter()
    image_tokenizer = embedded.load_image_tokenizer()
    feature_classifier, heldout_classifier = embedded.load_classifiers()
    test_images, test_labels = embedded.load_arrays("test")
    benchmark = SmallBenchmark(
        image_tokenizer, feature_classifier, heldout_classifier, test_images, test_labels,
        num_samples=args.eval_samples,
    )  # fmt: skip
    dataset, codes = train_dataset_with_codes(image_tokenizer, args.train_images)
    labels = torch.as_tensor(dataset["class_label"])
    results = {
        "settings": {**{k: v for k, v in vars(args).items() if k not in ("json", "plot")}},
        "real_floor": benchmark.real_floor(),
        "arms": {},
    }
    print(f"real floor: {json.dumps(results['real_floor'])}", flush=True)
    for arm in args.arms:
        spec = ARMS[arm]
        runs, logs, seconds = [], [], []
        for seed in args.seeds:
            mark = time.perf_counter()
            policy = embedded.load_policy()
            if arm == "base":
                pass
            elif spec.get("ce_only"):
                policy = train_ce_only(policy, codes, labels, args, spec["context_noise_prob"], seed)
            else:
                policy, log = train_vapi(
                    policy,
                    image_tokenizer,
                    dataset,
                    args,
                    spec["context_noise_prob"],
                    spec["ce_coef"],
                    seed,
                    spec.get("steps_multiplier", 1),
                    spec.get("lr_multiplier", 1.0),
                )
                logs.append(log[-1] if log else {})
            train_s = time.perf_counter() - mark
            metrics = benchmark.evaluate(policy, seed=seed)
            runs.append(metrics)
            seconds.append({"train_s": train_s, "evaluate_s": time.perf_counter() - mark - train_s})
            print(
                f"{arm} seed {seed}: {json.dumps({k: round(v, 5) for k, v in metrics.items()})} "
                f"({seconds[-1]['train_s']:.0f}s + {seconds[-1]['evaluate_s']:.0f}s)",
                flush=True,
            )
        results["arms"][arm] = {
            "spec": spec,
            "runs": runs,
            "summary": summarize(runs),
            "last_train_log": logs,
            "seconds": seconds,
        }
    results["total_s"] = time.perf_counter() - started
    results["environment"] = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": "cuda" if torch.cuda.is_available() else platform.processor() or "cpu",
    }
    print(table(results))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    if args.plot:
        plot(results, args.plot)
    return results


def table(results: dict) -> str:
    """Markdown table: one row per arm, `mean ± std` per metric, and the real-data floor row."""
    header = "| arm | " + " | ".join(f"{m} {'↓' if m in LOWER_IS_BETTER else '↑'}" for m in METRICS) + " |"
    lines = [header, "|---" * (len(METRICS) + 1) + "|"]
    for arm, data in results["arms"].items():
        cells = [f"{data['summary'][m]['mean']:.4g} ± {data['summary'][m]['std']:.2g}" for m in METRICS]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    floor = results["real_floor"]
    lines.append("| real floor | " + " | ".join(f"{floor[m]:.4g}" if m in floor else "—" for m in METRICS) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
