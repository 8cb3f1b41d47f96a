import json
import os
import sys

import pytest


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """`reproduce_small` sets the torch thread count of its process (`--threads`); later tests get theirs back."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_step_cost_benchmark_runs_and_reports_every_part(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(ROOT, "benchmarks"))
    sys.modules.pop("step_cost", None)
    import step_cost

    path = tmp_path / "tiny.json"
    report = step_cost.main(["--model", "tiny", "--num-images", "2", "--num-generations", "4", "--repeats", "1",
                             "--json", str(path)])  # fmt: skip
    assert json.loads(path.read_text()) == report
    for part in ("vq_encode_s", "sampling_forward_s", "draw_s", "vq_decode_s", "pixel_reward_s",
                 "loss_forward_backward_grouped_s", "loss_forward_backward_naive_s"):  # fmt: skip
        assert report["seconds"][part] > 0
    # Same objective both ways: the grouped pass only changes the cost.
    assert report["grouped_minus_naive_loss"] < 1e-5
    assert report["num_generations"] == 4 and report["policy_parameters"] > 0


@pytest.mark.slow
def test_rollout_speed_benchmark_runs_on_the_tiny_config(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(ROOT, "benchmarks"))
    sys.modules.pop("rollout_speed", None)
    import rollout_speed

    path = tmp_path / "rollout.json"
    report = rollout_speed.main(["--configs", "tiny", "--num-images", "2", "--num-generations", "2", "--repeats", "1",
                                 "--json", str(path)])  # fmt: skip
    assert json.loads(path.read_text()) == report
    text = json.dumps(report)
    assert "tiny" in text and "grpo" in text.lower()


@pytest.mark.slow
def test_reproduce_small_runs_every_kind_of_job_and_chooses_sampling_on_validation(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(ROOT, "benchmarks"))
    sys.modules.pop("reproduce_small", None)
    import reproduce_small

    path, picture = tmp_path / "small.json", tmp_path / "small.png"
    results = reproduce_small.main(["--arms", "base", "base_tuned", "ce_only", "vapi", "--seeds", "0", "1",
                                    "--steps", "2", "--num-images", "2", "--num-generations", "2",
                                    "--train-images", "20", "--eval-samples", "60", "--val-samples", "30",
                                    "--json", str(path), "--plot", str(picture)])  # fmt: skip
    assert json.loads(path.read_text()) == json.loads(json.dumps(results))
    assert picture.stat().st_size > 10_000
    # The tuned base's setting is the lowest validation FID of the sweep; the test split never enters the choice.
    selection = results["sampling_selection"]
    settings = list(reproduce_small.SAMPLING_SETTINGS)
    assert [(r["temperature"], r["top_k"]) for r in selection["validation_sweep"]] == settings
    best = min(selection["validation_sweep"], key=lambda r: r["fid"])
    assert selection["chosen"] == {"temperature": best["temperature"], "top_k": best["top_k"]}
    assert results["arms"]["base_tuned"]["spec"]["sampling"] == selection["chosen"]
    assert [(r["temperature"], r["top_k"]) for r in results["frontier_test"]] == settings
    for metric in reproduce_small.METRICS:
        assert results["arms"]["vapi"]["summary"][metric]["n"] == 2
        assert results["arms"]["base_tuned"]["summary"][metric]["n"] == 2
    # Work is not done twice: the frontier's τ = 1 point is the base's first seed, and the tuned base takes its
    # teacher-forced scores from the base (they ignore the sampling setting), each reuse on record.
    reused = results["reused"]
    assert any(line.startswith("frontier_test τ=1.0 top-k=0") for line in reused)
    # Validation sweeps the frontier's own grid, so whatever it picks, the tuned base's first seed is that
    # frontier point (the same samples) and only the other seeds are sampled.
    chosen = (selection["chosen"]["temperature"], selection["chosen"]["top_k"])
    point = next(r for r in results["frontier_test"] if (r["temperature"], r["top_k"]) == chosen)
    assert f"arms.base_tuned seed 0: frontier_test τ={chosen[0]} top-k={chosen[1]}" in reused
    assert results["arms"]["base_tuned"]["runs"][0]["fid"] == point["fid"]
    assert results["arms"]["base_tuned"]["seconds"][0]["evaluate_s"] == 0.0
    for run, base in zip(results["arms"]["base_tuned"]["runs"], results["arms"]["base"]["runs"]):
        for metric in reproduce_small.TEACHER_FORCED_METRICS:
            assert run[metric] == base[metric]
    assert "ce_clean" not in results["arms"] and set(reproduce_small.DIAGNOSTIC_ARMS) <= set(reproduce_small.ARMS)
    assert set(results["exposure_ladder"]) == {"vq_reconstruction", "teacher_forced_draw", "free_running"}
    table = reproduce_small.table(results)
    assert "base_tuned (τ=" in table and "real floor" in table and "teacher forced draw" in table


def test_reproduce_small_policy_option_loads_that_base_and_rejects_another_vq(tmp_path, monkeypatch):
    import argparse

    import torch

    monkeypatch.syspath_prepend(os.path.join(ROOT, "benchmarks"))
    sys.modules.pop("reproduce_small", None)
    import reproduce_small

    from vapi_trl.demo import embedded
    from vapi_trl.models import LlamaGenConfig, LlamaGenForClassToImage

    shipped = embedded.load_policy()
    shipped.save_pretrained(tmp_path / "same")
    loaded = reproduce_small.load_base_policy(argparse.Namespace(policy=str(tmp_path / "same")))
    assert not loaded.training
    for name, tensor in shipped.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor)

    other = LlamaGenForClassToImage(LlamaGenConfig(vocab_size=16, hidden_size=32, num_hidden_layers=1,
                                                   num_attention_heads=4, block_size=64, num_classes=10))  # fmt: skip
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(ValueError, match="16 entries"):
        reproduce_small._init_worker({"policy": str(tmp_path / "other"), "threads": 1})


@pytest.mark.slow
def test_reproduce_small_reuses_only_what_a_separate_job_computes_the_same(monkeypatch):
    """The frontier's τ = 1 point is the base's run, a tuned-base seed can be the frontier point at its setting, and
    its teacher-forced scores are the base's: each reused value equals what its own job computes."""
    import argparse

    import torch

    monkeypatch.syspath_prepend(os.path.join(ROOT, "benchmarks"))
    sys.modules.pop("reproduce_small", None)
    import reproduce_small

    args = argparse.Namespace(threads=torch.get_num_threads(), eval_samples=60, val_samples=30, train_images=20,
                              split="test", policy=None)  # fmt: skip
    reproduce_small._init_worker(vars(args))
    base = reproduce_small.run_job({"kind": "arm", "arm": "base", "seed": 1})
    at_one = reproduce_small.run_job({"kind": "sampling", "split": "test", "seed": 1, "temperature": 1.0, "top_k": 0})
    sampling = {"temperature": 0.8, "top_k": 0}
    tuned = reproduce_small.run_job({"kind": "arm", "arm": "base_tuned", "seed": 1, "sampling": sampling})
    point = reproduce_small.run_job({"kind": "sampling", "split": "test", "seed": 1, **sampling})
    assert set(at_one["metrics"]) == set(base["metrics"]) - set(reproduce_small.TEACHER_FORCED_METRICS)
    for metric, value in at_one["metrics"].items():
        torch.testing.assert_close(value, base["metrics"][metric], rtol=1e-5, atol=1e-8)
        torch.testing.assert_close(point["metrics"][metric], tuned["metrics"][metric], rtol=1e-5, atol=1e-8)
    for metric in reproduce_small.TEACHER_FORCED_METRICS:
        torch.testing.assert_close(tuned["metrics"][metric], base["metrics"][metric], rtol=1e-5, atol=1e-8)


@pytest.mark.slow
def test_reproduce_small_with_two_workers_queues_the_tuned_base_after_the_validation_sweep(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(ROOT, "benchmarks"))
    sys.modules.pop("reproduce_small", None)
    import reproduce_small

    results = reproduce_small.main(["--arms", "base", "base_tuned", "ce_only", "--seeds", "0", "1", "--workers", "2",
                                    "--steps", "1", "--num-images", "2", "--train-images", "20", "--eval-samples",
                                    "40", "--val-samples", "20", "--no-frontier"])  # fmt: skip
    selection = results["sampling_selection"]
    best = min(selection["validation_sweep"], key=lambda r: r["fid"])
    assert selection["chosen"] == {"temperature": best["temperature"], "top_k": best["top_k"]}
    assert [len(results["arms"][arm]["runs"]) for arm in ("base", "base_tuned", "ce_only")] == [2, 2, 2]
    assert results["frontier_test"] == [] and "exposure_ladder" not in results
