import json
import os
import sys

import pytest


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
