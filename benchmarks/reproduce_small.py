"""Small-scale reproduction of VA-π on the embedded Fashion-MNIST base, every arm measured side by side.

The base (see `scripts/pretrain_tiny.py`) is built for the paper's regime at toy scale: 64 tokens per image (8×8
grid), 512 codes, a 0.16M-parameter LlamaGen C2I policy pretrained on 56 000 images (best validation CE within its
budget, with a measured exposure gap) and sampled without CFG.

Arms (same base policy, same optimizer steps, same images per step, same training split, same seeds):

- `base`: the shipped policy at τ = 1, no top-k (how VA-π and every trained arm are sampled too);
- `base_tuned`: the same policy at its best sampling temperature / top-k, chosen by FID on the *validation* split
  over the grid the test frontier draws (`SAMPLING_SETTINGS`), never on the test split: is VA-π more than a cheaper
  temperature?
- `ce_only`: teacher-forced cross-entropy on the ξ-corrupted context (VA-π's β term alone) with VA-π's optimizer
  (AdamW, same lr, betas, weight decay with transformers' exemptions, grad clip 1.0, constant schedule) and the same
  train-mode forward. `VAPiConfig` cannot switch the policy-gradient term off (pixel_weight = lpips_weight = 0 is
  rejected), so this arm is a plain loop;
- `ce_clean`: the same loop on clean contexts (ξ = 0): plain continued pretraining on the tuning split, the control
  that tells what any fine-tuning at this budget does;
- `vapi`: VA-π at the paper's defaults, ξ = 0.5, β = 0.1, the train-mode loss forward, reward −MSE (LPIPS backbone
  weights are not available offline; with them, pass `--lpips`);
- `reward_only`: β = 0, the paper's collapse case;
- ablations around `vapi`: ξ ∈ {0, 1} and β ∈ {0.01, 1};
- `eval_forward`: `vapi` with `loss_forward_mode="eval"` (no dropout in the loss forward), to isolate what the
  official train-mode forward's label dropout does.

Each trained arm runs once per seed (the seed sets the trainer's data order, context noise and sample draws); every
policy is scored with the same sampling seed, so arms share labels and random numbers. Metrics: see
`vapi_trl.evaluation.small_benchmark` (≥ 2 000 free-running samples against the test split); `real_floor` is the
real-vs-real value. Also reported: the exposure ladder of the base (VQ reconstruction → teacher-forced draw →
free-running), and the temperature/top-k frontier of the base on the test split, drawn as the precision–recall curve
on which every arm is a point.

Choosing the setting (steps, learning rate) is done on the validation split, `--split val`; the reported numbers
come from `--split test`. Example (17.7 min on this project's 2-core CPU machine, the 9 default arms × 3 seeds):

    python benchmarks/reproduce_small.py --workers 2 --json docs/results/small_benchmark.json \\
        --plot docs/results/small_benchmark.png
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context

import torch

from vapi_trl.evaluation.small_benchmark import TEACHER_FORCED_METRICS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ARMS: dict[str, dict] = {
    "base": {"kind": "base"},
    "base_tuned": {"kind": "base_tuned"},
    "ce_only": {"kind": "ce_only", "context_noise_prob": 0.5},
    "ce_clean": {"kind": "ce_only", "context_noise_prob": 0.0},
    "vapi": {"kind": "vapi", "context_noise_prob": 0.5, "ce_coef": 0.1},
    "reward_only": {"kind": "vapi", "context_noise_prob": 0.5, "ce_coef": 0.0},
    "xi_0.0": {"kind": "vapi", "context_noise_prob": 0.0, "ce_coef": 0.1},
    "xi_1.0": {"kind": "vapi", "context_noise_prob": 1.0, "ce_coef": 0.1},
    "beta_0.01": {"kind": "vapi", "context_noise_prob": 0.5, "ce_coef": 0.01},
    "beta_1.0": {"kind": "vapi", "context_noise_prob": 0.5, "ce_coef": 1.0},
    # `vapi` with every dropout off in the loss forward: isolates what the official train-mode forward (10% label
    # dropout in the loss pass, none in the sampling pass) costs.
    "eval_forward": {"kind": "vapi", "context_noise_prob": 0.5, "ce_coef": 0.1, "loss_forward_mode": "eval"},
}
#: Diagnostic arms, not in the default run (add them with `--arms`): they explain a result, they are not the
#: comparison the benchmark is for, and leaving them out keeps the default run within 20 minutes on 2 CPU cores.
DIAGNOSTIC_ARMS = ("ce_clean", "eval_forward")
DEFAULT_ARMS = [arm for arm in ARMS if arm not in DIAGNOSTIC_ARMS]
METRICS = ("fid", "kid", "precision", "recall", "class_accuracy", "heldout_ce", "tf_recon_mse")
LOWER_IS_BETTER = ("fid", "kid", "heldout_ce", "tf_recon_mse")
#: The base's sampling settings: swept on the validation split to choose `base_tuned`, and drawn on the test split
#: as the precision–recall frontier. One grid for both, so whichever setting validation picks, the tuned base's first
#: seed is a frontier point (same policy, split, seed and setting: the same samples) and is not sampled twice.
FRONTIER_TEMPERATURES = (0.6, 0.7, 0.8, 0.9, 1.0, 1.1)
FRONTIER_TOP_K = (32, 128)
SAMPLING_SETTINGS: tuple[tuple[float, int], ...] = tuple(
    [(t, 0) for t in FRONTIER_TEMPERATURES] + [(1.0, k) for k in FRONTIER_TOP_K]
)

# One benchmark state per worker process, built once by `_init_worker`.
_STATE: dict = {}


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
    from vapi_trl import VAPiConfig
    from vapi_trl.objective import ce_prior, corrupt_context

    defaults = VAPiConfig.__dataclass_fields__
    torch.manual_seed(seed)
    # transformers exempts biases and norm weights from weight decay; the same split here.
    decay = [p for n, p in policy.named_parameters() if p.requires_grad and "norm" not in n and "bias" not in n]
    rest = [p for n, p in policy.named_parameters() if p.requires_grad and ("norm" in n or "bias" in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": defaults["weight_decay"].default}, {"params": rest, "weight_decay": 0.0}],
        lr=args.learning_rate,
        betas=(defaults["adam_beta1"].default, defaults["adam_beta2"].default),
    )
    generator = torch.Generator().manual_seed(seed)
    policy.train()  # the train-mode forward, as VA-π's default loss_forward_mode
    order = torch.randperm(len(codes), generator=generator)
    for step in range(args.steps):
        index = order[(step * args.num_images) % len(codes) :][: args.num_images]
        ids = codes[index]
        context = corrupt_context(ids, context_noise_prob, policy.codebook_size)
        logits = policy(class_labels=labels[index], context_ids=context).logits
        loss = ce_prior(logits, ids)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), defaults["max_grad_norm"].default)
        optimizer.step()
    return policy.eval()


def train_vapi(
    policy, image_tokenizer, dataset, args, context_noise_prob: float, ce_coef: float, seed: int,
    loss_forward_mode: str = "train",
):  # fmt: skip
    """VA-π with `VAPiTrainer` (project defaults but the geometry, lr and the two arm parameters); the last log."""
    from transformers import PrinterCallback

    from vapi_trl import VAPiConfig, VAPiTrainer

    with tempfile.TemporaryDirectory() as output_dir:
        config = VAPiConfig(
            output_dir=output_dir, max_steps=args.steps, learning_rate=args.learning_rate,
            per_device_train_batch_size=args.num_images * args.num_generations, num_generations=args.num_generations,
            context_noise_prob=context_noise_prob, ce_coef=ce_coef, lpips_weight=1.0 if args.lpips else 0.0,
            loss_forward_mode=loss_forward_mode,
            bf16=False, use_cpu=not torch.cuda.is_available(), report_to="none", save_strategy="no",
            logging_steps=max(1, args.steps // 5), disable_tqdm=True, seed=seed, dataloader_num_workers=0,
        )  # fmt: skip
        policy.train()
        trainer = VAPiTrainer(model=policy, args=config, train_dataset=dataset, image_tokenizer=image_tokenizer)
        trainer.remove_callback(PrinterCallback)
        trainer.train()
        logs = [entry for entry in trainer.state.log_history if "loss" in entry]
        return trainer.policy.eval(), (logs[-1] if logs else {})


def _init_worker(args_dict: dict) -> None:
    """Build the benchmark state of one process: tokenizer, classifiers, test and validation benchmarks, train rows."""
    sys.path.insert(0, REPO)
    args = argparse.Namespace(**args_dict)
    torch.set_num_threads(args.threads)
    from vapi_trl.demo import embedded
    from vapi_trl.evaluation.small_benchmark import SmallBenchmark

    image_tokenizer = embedded.load_image_tokenizer()
    if getattr(args, "policy", None):  # another base on the shipped VQ (e.g. `pretrain_tiny.py --policy-only`)
        base = load_base_policy(args)
        image_tokenizer.check_compatible(base.codebook_size, base.num_image_tokens)
    feature_classifier, heldout_classifier = embedded.load_classifiers()
    benchmarks = {}
    for split, samples in (("test", args.eval_samples), ("val", args.val_samples)):
        images, labels = embedded.load_arrays(split)
        benchmarks[split] = SmallBenchmark(
            image_tokenizer, feature_classifier, heldout_classifier, images, labels, num_samples=samples
        )
    dataset, codes = train_dataset_with_codes(image_tokenizer, args.train_images)
    _STATE.update(
        args=args, image_tokenizer=image_tokenizer, benchmarks=benchmarks, dataset=dataset, codes=codes,
        labels=torch.as_tensor(dataset["class_label"]),
    )  # fmt: skip


def load_base_policy(args):
    """The base under test: the shipped embedded policy, or `--policy` (a `LlamaGenForClassToImage` folder)."""
    from vapi_trl.demo import embedded
    from vapi_trl.models import LlamaGenForClassToImage

    if not getattr(args, "policy", None):
        return embedded.load_policy()
    return LlamaGenForClassToImage.from_pretrained(args.policy, local_files_only=True).eval()


def run_job(job: dict) -> dict:
    """One unit of work in a worker: a sampling-setting evaluation of the base, an exposure ladder, or one arm×seed."""
    args, benchmarks = _STATE["args"], _STATE["benchmarks"]
    mark = time.perf_counter()
    policy = load_base_policy(args)
    if job["kind"] == "sampling":  # the base at one (τ, top-k) on one split: sample metrics only
        metrics = benchmarks[job["split"]].evaluate(
            policy, seed=job["seed"], temperature=job["temperature"], top_k=job["top_k"], teacher_forced=False
        )
        return {**job, "metrics": metrics, "seconds": time.perf_counter() - mark}
    if job["kind"] == "ladder":
        ladder = benchmarks[job["split"]].exposure_ladder(policy, seed=job["seed"])
        return {**job, "ladder": ladder, "seconds": time.perf_counter() - mark}
    spec, seed, log = ARMS[job["arm"]], job["seed"], {}
    sampling = job.get("sampling", {"temperature": 1.0, "top_k": 0})
    if spec["kind"] == "ce_only":
        policy = train_ce_only(policy, _STATE["codes"], _STATE["labels"], args, spec["context_noise_prob"], seed)
    elif spec["kind"] == "vapi":
        policy, log = train_vapi(
            policy,
            _STATE["image_tokenizer"],
            _STATE["dataset"],
            args,
            spec["context_noise_prob"],
            spec["ce_coef"],
            seed,
            spec.get("loss_forward_mode", "train"),
        )
    train_s = time.perf_counter() - mark
    metrics = benchmarks[args.split].evaluate(
        policy, seed=seed, teacher_forced=job.get("teacher_forced", True), **sampling
    )
    return {
        **job,
        "metrics": metrics,
        "last_train_log": log,
        "train_s": train_s,
        "evaluate_s": time.perf_counter() - mark - train_s,
    }


def _say_result(result: dict, say) -> None:
    label = result.get("arm") or f"{result['kind']} τ={result.get('temperature')} k={result.get('top_k')}"
    shown = result.get("metrics") or result["ladder"]["free_running"]
    say(f"{label} seed {result['seed']}: fid {shown['fid']:.3f} precision {shown['precision']:.3f} "
        f"recall {shown['recall']:.3f}")  # fmt: skip


def _run_all(jobs: list[dict], pool, say, follow_up) -> list[dict]:
    """
    Run `jobs` (in the pool, in this order, or here when `pool` is None); after each result, the jobs that
    `follow_up(results so far)` returns are queued too. Jobs are dispatched as workers free up, so a job that waits
    for others (the tuned base waits for the validation sweep) does not leave a worker idle.
    """
    results: list[dict] = []
    if pool is None:
        queue = list(jobs)
        while queue:
            results.append(run_job(queue.pop(0)))
            _say_result(results[-1], say)
            queue += follow_up(results)
        return results
    running = {pool.submit(run_job, job) for job in jobs}
    while running:
        finished, running = wait(running, return_when=FIRST_COMPLETED)
        for future in finished:
            results.append(future.result())
            _say_result(results[-1], say)
            running |= {pool.submit(run_job, job) for job in follow_up(results)}
    return results


def _plan(args) -> list[dict]:
    """
    The first jobs, longest first so that the last ones to finish are short: the validation sweep (the tuned base
    waits for it), the trained arms, the exposure ladder, the base, then the test frontier. The frontier's τ = 1,
    no-top-k point is the base arm's first seed (same policy, split, seed and setting: the same samples), so it is
    not run twice.
    """
    first_seed = args.seeds[0]
    jobs = []
    if "base_tuned" in args.arms:  # the validation sweep only serves the base_tuned choice
        jobs += [
            {"kind": "sampling", "split": "val", "seed": first_seed, "temperature": t, "top_k": k}
            for t, k in SAMPLING_SETTINGS
        ]
    cost = {"vapi": 0, "ce_only": 1, "base": 2}
    trained = sorted((a for a in args.arms if a != "base_tuned"), key=lambda a: cost[ARMS[a]["kind"]])
    jobs += [{"kind": "arm", "arm": arm, "seed": seed} for arm in trained if arm != "base" for seed in args.seeds]
    if args.split == "test" and not args.no_frontier:
        jobs.append({"kind": "ladder", "split": "test", "seed": first_seed})
    if "base" in args.arms:
        jobs += [{"kind": "arm", "arm": "base", "seed": seed} for seed in args.seeds]
    for temperature, top_k in _frontier_settings(args):
        if (temperature, top_k) != (1.0, 0) or "base" not in args.arms:
            jobs.append({"kind": "sampling", "split": "test", "seed": first_seed, "temperature": temperature,
                         "top_k": top_k})  # fmt: skip
    return jobs


def _frontier_settings(args) -> list[tuple[float, int]]:
    if args.split != "test" or args.no_frontier:
        return []
    return list(SAMPLING_SETTINGS)


def _tuned_runs(
    runs: list[dict], seeds: list[int], chosen: dict, frontier: dict, base_runs: dict, reused: list[str]
) -> list[dict]:
    """
    The tuned base's run per seed: its own job, or the test frontier's point at the chosen setting (first seed);
    with the teacher-forced scores of the base at the same seed when the base ran (they ignore the sampling setting).
    """
    by_seed = {r["seed"]: r for r in runs}
    completed = []
    for seed in seeds:
        if seed in by_seed:
            run = {**by_seed[seed], "metrics": dict(by_seed[seed]["metrics"])}
        else:
            setting = (chosen["temperature"], chosen["top_k"])
            run = {"seed": seed, "metrics": dict(frontier[setting]), "last_train_log": {}, "train_s": 0.0,
                   "evaluate_s": 0.0}  # fmt: skip
            reused.append(f"arms.base_tuned seed {seed}: frontier_test τ={setting[0]} top-k={setting[1]}")
        if seed in base_runs:
            run["metrics"].update({k: base_runs[seed][k] for k in TEACHER_FORCED_METRICS})
            reused.append(f"arms.base_tuned seed {seed} {', '.join(TEACHER_FORCED_METRICS)}: arms.base seed {seed}")
        completed.append(run)
    return completed


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", default=None, help="Write the results to this JSON file.")
    parser.add_argument("--plot", default=None, help="Write the precision–recall frontier and FID chart (PNG) here.")
    parser.add_argument(
        "--arms",
        nargs="+",
        default=DEFAULT_ARMS,
        choices=list(ARMS),
        help=f"Arms to run (default: all but the diagnostics {', '.join(DIAGNOSTIC_ARMS)}).",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--split",
        choices=("test", "val"),
        default="test",
        help="Where the arms are scored: `val` to choose a setting (steps, lr), `test` for the reported numbers.",
    )
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--num-images", type=int, default=8, help="U: images per step.")
    parser.add_argument("--num-generations", type=int, default=8, help="G: samples per image.")
    parser.add_argument("--learning-rate", type=float, default=1e-6, help="Chosen on the validation split.")
    parser.add_argument("--train-images", type=int, default=5000)
    parser.add_argument("--eval-samples", type=int, default=2000, help="Free-running samples per test evaluation.")
    parser.add_argument("--val-samples", type=int, default=1000, help="Samples per validation evaluation.")
    parser.add_argument("--no-frontier", action="store_true", help="Skip the base's temperature/top-k sweep on test.")
    parser.add_argument(
        "--policy",
        default=None,
        help="Benchmark this base (a LlamaGenForClassToImage folder over the shipped VQ, e.g. from "
        "`scripts/pretrain_tiny.py --policy-only --out DIR`) instead of the shipped policy.",
    )
    parser.add_argument("--lpips", action="store_true", help="Add LPIPS-VGG to the reward (needs cached weights).")
    parser.add_argument("--workers", type=int, default=1, help="Worker processes (one job each at a time).")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per worker.")
    args = parser.parse_args(argv)
    if args.workers < 1 or args.threads < 1:
        parser.error(f"--workers and --threads must be ≥ 1, got {args.workers} and {args.threads}.")
    started = time.perf_counter()

    def say(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f}s] {message}", flush=True)

    args_dict = {k: v for k, v in vars(args).items() if k not in ("json", "plot")}
    _init_worker(args_dict)  # the main process scores the floor; workers build their own copy
    from vapi_trl.evaluation.small_benchmark import summarize

    results = {
        "settings": args_dict,
        "real_floor": _STATE["benchmarks"][args.split].real_floor(),
        "arms": {},
    }
    say(f"real floor ({args.split}): {json.dumps({k: round(v, 4) for k, v in results['real_floor'].items()})}")
    first_seed = args.seeds[0]
    jobs = _plan(args)
    frontier_settings = _frontier_settings(args)
    num_validation = sum(job["kind"] == "sampling" and job["split"] == "val" for job in jobs)
    # The tuned base's first seed is the frontier point at the chosen setting when the frontier has it, and the
    # teacher-forced scores of a base_tuned run are the base's at the same seed: they do not depend on sampling.
    reuse_base = "base" in args.arms
    chosen: dict = {}

    def follow_up(done: list[dict]) -> list[dict]:
        """The tuned base's jobs, once the whole validation sweep is in."""
        validation = [r for r in done if r["kind"] == "sampling" and r["split"] == "val"]
        if "base_tuned" not in args.arms or chosen or len(validation) < num_validation:
            return []
        best = min(validation, key=lambda r: r["metrics"]["fid"])
        chosen.update(temperature=best["temperature"], top_k=best["top_k"])
        say(f"best sampling on validation (FID): {chosen}")
        from_frontier = reuse_base and (chosen["temperature"], chosen["top_k"]) in frontier_settings
        return [
            {"kind": "arm", "arm": "base_tuned", "seed": s, "sampling": dict(chosen), "teacher_forced": not reuse_base}
            for s in args.seeds
            if not (from_frontier and s == first_seed)
        ]

    context = get_context("spawn")
    pool = (
        ProcessPoolExecutor(args.workers, mp_context=context, initializer=_init_worker, initargs=(args_dict,))
        if args.workers > 1
        else None
    )
    try:
        done = _run_all(jobs, pool, say, follow_up)
    finally:
        if pool is not None:
            pool.shutdown()
    validation = [r for r in done if r["kind"] == "sampling" and r["split"] == "val"]
    validation.sort(key=lambda r: SAMPLING_SETTINGS.index((r["temperature"], r["top_k"])))
    results["sampling_selection"] = {
        "chosen": chosen or None,
        "criterion": "lowest FID on the validation split, seed " + str(first_seed),
        "validation_sweep": [{**{k: r[k] for k in ("temperature", "top_k")}, **r["metrics"]} for r in validation],
    }
    results["reused"] = []
    base_runs = {r["seed"]: r["metrics"] for r in done if r.get("arm") == "base"}
    frontier = {
        (r["temperature"], r["top_k"]): r["metrics"] for r in done if r["kind"] == "sampling" and r["split"] == "test"
    }
    if (1.0, 0) in frontier_settings and (1.0, 0) not in frontier:
        frontier[(1.0, 0)] = {k: v for k, v in base_runs[first_seed].items() if k not in TEACHER_FORCED_METRICS}
        results["reused"].append(f"frontier_test τ=1.0 top-k=0: arms.base seed {first_seed} (the same samples)")
    results["frontier_test"] = [{"temperature": t, "top_k": k, **frontier[(t, k)]} for t, k in frontier_settings]
    ladder = [r for r in done if r["kind"] == "ladder"]
    if ladder:
        results["exposure_ladder"] = ladder[0]["ladder"]
    for arm in args.arms:
        runs = sorted((r for r in done if r.get("arm") == arm), key=lambda r: args.seeds.index(r["seed"]))
        if arm == "base_tuned":
            runs = _tuned_runs(runs, args.seeds, chosen, frontier, base_runs, results["reused"])
        results["arms"][arm] = {
            "spec": {**ARMS[arm], **({"sampling": chosen} if arm == "base_tuned" else {})},
            "runs": [r["metrics"] for r in runs],
            "summary": summarize([r["metrics"] for r in runs]),
            "last_train_log": [r["last_train_log"] for r in runs],
            "seconds": [{"train_s": r["train_s"], "evaluate_s": r["evaluate_s"]} for r in runs],
        }
    results["total_s"] = time.perf_counter() - started
    results["environment"] = {
        "torch": torch.__version__,
        "workers": args.workers,
        "threads_per_worker": args.threads,
        "cpu_count": os.cpu_count(),
        "device": "cuda" if torch.cuda.is_available() else platform.processor() or "cpu",
    }
    print(table(results))
    say(f"total {results['total_s']:.0f}s")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    if args.plot:
        plot(results, args.plot)
    return results


def table(results: dict) -> str:
    """Markdown table: one row per arm, `mean ± std` per metric, then the exposure ladder and the real-data floor."""
    header = "| arm | " + " | ".join(f"{m} {'↓' if m in LOWER_IS_BETTER else '↑'}" for m in METRICS) + " |"
    lines = [header, "|---" * (len(METRICS) + 1) + "|"]
    for arm, data in results["arms"].items():
        cells = [f"{data['summary'][m]['mean']:.4g} ± {data['summary'][m]['std']:.2g}" for m in METRICS]
        name = arm
        if arm == "base_tuned":
            chosen = results["sampling_selection"]["chosen"]
            name = f"base_tuned (τ={chosen['temperature']}, top-k={chosen['top_k'] or 'off'})"
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for rung, metrics in results.get("exposure_ladder", {}).items():
        cells = [f"{metrics[m]:.4g}" if m in metrics else "—" for m in METRICS]
        lines.append(f"| base, {rung.replace('_', ' ')} (floor half) | " + " | ".join(cells) + " |")
    floor = results["real_floor"]
    lines.append("| real floor | " + " | ".join(f"{floor[m]:.4g}" if m in floor else "—" for m in METRICS) + " |")
    return "\n".join(lines)


def plot(results: dict, path: str) -> None:
    """Left: precision–recall of the base's temperature and top-k sweeps (test split) with every arm as a point
    (mean ± std over seeds). Right: FID of every arm, mean ± std, with the real floor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(15, 6))
    frontier = results.get("frontier_test", [])
    for name, rows, style in (
        ("temperature (no top-k)", [r for r in frontier if r["top_k"] == 0], "o-"),
        ("top-k (τ = 1)", [r for r in frontier if r["top_k"] > 0], "s--"),
    ):
        if rows:
            left.plot([r["precision"] for r in rows], [r["recall"] for r in rows], style, color="#888888", label=name)
            for r in rows:
                tag = f"τ={r['temperature']}" if r["top_k"] == 0 else f"k={r['top_k']}"
                left.annotate(tag, (r["precision"], r["recall"]), fontsize=7, color="#555555")
    palette = plt.get_cmap("tab10")
    arms = list(results["arms"])
    for index, arm in enumerate(arms):
        summary = results["arms"][arm]["summary"]
        left.errorbar(
            summary["precision"]["mean"], summary["recall"]["mean"], xerr=summary["precision"]["std"],
            yerr=summary["recall"]["std"], fmt="*" if arm == "vapi" else "D", markersize=12 if arm == "vapi" else 7,
            color=palette(index % 10), label=arm, capsize=2,
        )  # fmt: skip
    left.set_xlabel("precision ↑")
    left.set_ylabel("recall ↑")
    left.set_title("Precision–recall: the base's sampling frontier (grey) and every arm")
    left.legend(fontsize=8, loc="best")
    means = [results["arms"][arm]["summary"]["fid"]["mean"] for arm in arms]
    stds = [results["arms"][arm]["summary"]["fid"]["std"] for arm in arms]
    right.bar(range(len(arms)), means, yerr=stds, color=[palette(i % 10) for i in range(len(arms))], capsize=3)
    right.axhline(results["real_floor"]["fid"], color="green", linestyle="--", linewidth=1, label="real floor")
    right.set_xticks(range(len(arms)), arms, rotation=45, ha="right", fontsize=8)
    right.set_title("FID ↓ (mean ± std over seeds)")
    right.legend(fontsize=8)
    settings = results["settings"]
    fig.suptitle(
        f"Small benchmark (Fashion-MNIST, 8×8 tokens, K=512): {settings['steps']} steps, U={settings['num_images']}, "
        f"G={settings['num_generations']}, lr={settings['learning_rate']}, {len(settings['seeds'])} seeds, "
        f"{settings['eval_samples']} samples/eval"
    )
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
