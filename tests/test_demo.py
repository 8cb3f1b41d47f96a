import json

import pytest
from PIL import Image

from vapi_trl.cli import main as cli_main


def test_demo_help_exits_zero():
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["demo", "--help"])
    assert exit_info.value.code == 0


def test_demo_settings_reject_bad_values():
    from vapi_trl.demo.run import DemoSettings

    with pytest.raises(ValueError, match="num_generations"):
        DemoSettings(num_generations=1)
    with pytest.raises(ValueError, match="steps"):
        DemoSettings(steps=0)


def test_fid_reading_states_the_measured_changes():
    from vapi_trl.demo.run import fid_reading

    worse = fid_reading(40.0, 42.0, 44.0)
    assert "aligned vs base +4.00 FID (+10.0%)" in worse and "tuned base vs base +2.00 FID (+5.0%)" in worse
    assert "is not lower than both" in worse and "docs/small_benchmark.md" in worse
    # Lower than the base but not than the tuned base is still "not lower than both".
    assert "is not lower than both" in fid_reading(40.0, 36.0, 38.0)
    assert "aligned vs base -4.00 FID (-10.0%)" in fid_reading(40.0, 41.0, 36.0)
    assert "is lower than both" in fid_reading(40.0, 41.0, 36.0)


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path):
    out = tmp_path / "demo"
    code = cli_main(["demo", "--output_dir", str(out), "--steps", "2", "--eval-samples", "40", "--val_samples", "20",
                     "--num-images", "2", "--num-generations", "4", "--quiet"])  # fmt: skip
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    metrics = report["metrics"]
    for key in ("fid", "kid", "precision", "recall", "class_accuracy", "heldout_ce", "tf_recon_mse"):
        assert key in metrics["before"] and key in metrics["after"] and key in metrics["tuned_base"]
        assert metrics["delta"][key] == pytest.approx(metrics["after"][key] - metrics["before"][key])
        assert metrics["delta_vs_tuned_base"][key] == pytest.approx(metrics["after"][key] - metrics["tuned_base"][key])
    # The sampling setting is the validation sweep's lowest FID, and the sweep is what the report says it is.
    from vapi_trl.demo.run import DEMO_SAMPLING_GRID

    selection = report["sampling_selection"]
    sweep = selection["validation_sweep"]
    assert [(row["temperature"], row["top_k"]) for row in sweep] == list(DEMO_SAMPLING_GRID)
    best = min(sweep, key=lambda row: row["fid"])
    assert selection["chosen"] == {"temperature": best["temperature"], "top_k": best["top_k"]}
    # Teacher-forced scores do not depend on the sampling setting: the tuned base shares them with the base.
    assert metrics["tuned_base"]["heldout_ce"] == pytest.approx(metrics["before"]["heldout_ce"], rel=1e-6)
    assert report["settings"]["steps"] == 2 and len(report["training_logs"]) >= 1
    assert report["lpips_weight"] in (0.0, 1.0) and report["timings"]["total_s"] > 0
    for name in ("samples_before.png", "samples_tuned_base.png", "samples_after.png"):
        with Image.open(out / name) as image:
            assert image.width > 200 and image.height > 200
    with Image.open(out / "side_by_side.png") as both, Image.open(out / "samples_before.png") as one:
        assert both.width > 2 * one.width  # two panels at a larger scale, captions above
    assert (out / "policy" / "model.safetensors").is_file()
    assert (out / "image_tokenizer" / "vq_model" / "model.safetensors").is_file()

    from vapi_trl.demo import load_policy
    from vapi_trl.models import LlamaGenForClassToImage

    aligned = LlamaGenForClassToImage.from_pretrained(str(out / "policy"))
    base = load_policy()
    changed = [n for n, p in aligned.named_parameters() if not p.detach().equal(base.get_parameter(n).detach())]
    assert changed, "two VA-π steps left every weight unchanged"
