import importlib.util
import json
import math
import os
import sys

import pytest
import torch

from vapi_trl import VAPiConfig, VAPiTrainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.slow
def test_gpu_check_tiny_cpu_runs_every_part(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(ROOT, "benchmarks"))
    sys.modules.pop("gpu_check", None)
    import gpu_check

    report = gpu_check.main(["--tiny", "--device", "cpu", "--out", str(tmp_path)])
    assert json.loads((tmp_path / "gpu_check.json").read_text()) == json.loads(json.dumps(report))
    table = (tmp_path / "gpu_check.md").read_text()
    for title in gpu_check.PART_TITLES.values():
        assert title in table
    parts = report["parts"]
    for part in gpu_check.PARTS:  # every part can run on CPU (some configs of part d cannot: checked below)
        assert parts[part]["status"] == "ran", (part, parts[part].get("traceback", parts[part].get("reason")))

    for row in parts["a"]["rows"] + parts["b"]["rows"]:
        for key in ("step_s", "image_s", "peak_memory_gib", "recipe_minutes_one_gpu", "trainable_parameters"):
            assert positive(row[key]), (row["model"], key, row[key])
        assert row["losses_finite"] and row["timed_steps"] == report["sizes"]["timed_steps"]
    assert [row["gradient_checkpointing"] for row in parts["a"]["rows"]] == [False, True]
    lora, janus = parts["b"]["rows"]
    assert lora["lora"] and lora["trainable_parameters"] < lora["parameters"]
    assert "Janus" in janus["model"] and janus["tokens"] == 64

    rows = parts["c"]["rows"]
    assert {row["mode"] for row in rows} >= {"fp32", "bf16", "bf16+channels_last", "bf16+channels_last+sdpa"}
    for row in rows:
        assert positive(row["within_group_std"]) and math.isfinite(row["reward_abs_err_mean"])
        if row["mode"] == "fp32":
            assert row["reward_abs_err_max"] == 0
        else:  # bf16 changes the numbers, a little: well below the group spread
            assert 0 < row["err_over_std"] < 1, row
        if "demo" not in row["case"]:
            assert positive(row["image_s"])

    expected = {"single_gpu": "NO", "multi_gpu": "MULTI_CPU", "deepspeed_zero2": "DEEPSPEED",
                "deepspeed_zero3": "DEEPSPEED", "fsdp": "MULTI_CPU"}  # fmt: skip
    has_deepspeed = importlib.util.find_spec("deepspeed") is not None
    for row in parts["d"]["rows"]:
        name = row["config"]
        if name.startswith("deepspeed") and not has_deepspeed:
            assert row["status"] == "skipped" and "deepspeed" in row["reason"]
            continue
        assert row["status"] in ("ran", "ran as DDP"), (row, row.get("first_failure"), row.get("log_tail"))
        assert row["distributed_type"] == expected[name]
        assert row["world_size"] == (1 if name == "single_gpu" else 2)
        # Step 1 trained, step 2 (inf reward) was skipped by the guard: weights unchanged and finite.
        assert row["step1_param_change"] > 0 and row["step2_param_change"] == 0 and row["skipped_steps"] == 1
        assert row["params_finite"] and row["frozen_whole_on_all_ranks"]
        assert row["saved_keys_are_policy"] and row["saved_frozen_keys"] == []
        assert row["reload_max_abs_err"] == 0
    if has_deepspeed:
        zero3 = next(row for row in parts["d"]["rows"] if row["config"] == "deepspeed_zero3")
        assert zero3["policy_sharded"]

    (loss_pass,) = parts["e"]["rows"]
    assert positive(loss_pass["grouped_s"]) and positive(loss_pass["naive_s"])
    assert loss_pass["naive_over_grouped"] > 1 and loss_pass["grouped_minus_naive_loss"] < 1e-5


def test_bf16_decode_option_trains(tmp_path, tiny_policy, tiny_image_tokenizer, tiny_c2i_dataset):
    args = VAPiConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=2, max_steps=1, learning_rate=1e-3,
        bf16=False, use_cpu=True, report_to="none", save_strategy="no", lpips_net="alex", lpips_random_backbone=True,
        decode_dtype="bfloat16", num_images_to_log=0,
    )  # fmt: skip
    trainer = VAPiTrainer(
        model=tiny_policy, args=args, train_dataset=tiny_c2i_dataset, image_tokenizer=tiny_image_tokenizer
    )
    seen = []
    decode = trainer.image_tokenizer.vq_model.decode

    def recording(*a, **kw):
        seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return decode(*a, **kw)

    trainer.image_tokenizer.vq_model.decode = recording
    trainer.train()
    assert seen and all(dtype == torch.bfloat16 for dtype in seen)
    logged = [entry for entry in trainer.state.log_history if "reward" in entry]
    assert logged and math.isfinite(logged[-1]["reward"]) and logged[-1]["reward_std"] > 0
    with pytest.raises(ValueError, match="decode_dtype"):
        VAPiConfig(output_dir=str(tmp_path), learning_rate=1e-6, decode_dtype="float16")


def test_sdpa_mid_block_computes_the_same_attention(monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(ROOT, "benchmarks"))
    sys.modules.pop("gpu_check", None)
    import gpu_check

    from vapi_trl.models import ImageTokenizerProcessor

    torch.manual_seed(0)
    processor = ImageTokenizerProcessor.from_vq_config(gpu_check.vq_config(True, 32, 64), 32)
    ids = torch.randint(0, 64, (3, processor.num_image_tokens))
    reference = processor.decode(ids)
    with gpu_check.sdpa_mid_block(processor.vq_model) as patched:
        assert patched >= 1
        sdpa = processor.decode(ids)
    assert torch.allclose(sdpa, reference, atol=1e-5)
    assert torch.equal(processor.decode(ids), reference)  # the original forward is restored
