import ast
import io
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from datasets import Dataset, Features, Image, Value
from PIL import Image as PILImage

from vapi_trl import VAPiTrainer
from vapi_trl.checkpoints import is_complete_checkpoint, last_complete_checkpoint
from vapi_trl.models import LlamaGenForClassToImage

from .conftest import assert_close_scaled, make_image_dataset, tiny_llamagen_config, tiny_vq_config
from .test_trainer import make_args, make_trainer


ROOT = pathlib.Path(__file__).resolve().parents[1]


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def dataset_with_corrupt_files() -> Dataset:
    rng = np.random.default_rng(0)
    good = [png_bytes(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)) for _ in range(6)]
    truncated = good[0][: len(good[0]) // 2]
    garbage = b"this is not an image"
    images = [{"bytes": b, "path": None} for b in good[:3]] + [
        {"bytes": truncated, "path": "truncated.png"},
        {"bytes": garbage, "path": "garbage.jpg"},
    ] + [{"bytes": b, "path": None} for b in good[3:]]  # fmt: skip
    return Dataset.from_dict(
        {"image": images, "class_label": list(range(len(images)))},
        features=Features({"image": Image(), "class_label": Value("int64")}),
    )


def test_corrupt_and_truncated_images_are_skipped_and_counted(tmp_path, tiny_policy, tiny_image_tokenizer):
    dataset = dataset_with_corrupt_files()
    with pytest.raises(OSError):  # what a plain datasets loop would do: die on the corrupt row
        [row["image"].load() for row in dataset]
    # 8 rows → 2 per micro-batch × 4 steps covers every image, corrupt ones included
    trainer = make_trainer(
        tmp_path, tiny_policy, tiny_image_tokenizer, dataset=dataset, max_steps=4, shuffle_dataset=False
    )
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "skipped_images" in entry]
    assert logged[-1]["skipped_images"] == 2
    assert logged[-1]["skipped_steps"] == 0
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_non_finite_reward_skips_the_step_and_is_logged(tmp_path, tiny_policy, tiny_image_tokenizer):
    calls = {"n": 0}

    def flaky(prompts, completions, **kwargs):
        calls["n"] += 1
        # One +inf in a group (an all-inf group has zero advantages); not NaN, which for an extra reward means "does
        # not apply" (TRL's nan-aware sum) and is ignored.
        return [float("inf")] + [0.0] * (len(prompts) - 1) if calls["n"] == 2 else [0.0] * len(prompts)

    torch.manual_seed(0)
    trainer = VAPiTrainer(
        model=tiny_policy,
        args=make_args(tmp_path, max_steps=3),
        train_dataset=make_image_dataset(),
        image_tokenizer=tiny_image_tokenizer,
        reward_funcs=flaky,
    )
    snapshots = []

    class Snapshot(__import__("transformers").TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            snapshots.append({n: p.detach().clone() for n, p in trainer.model.named_parameters()})

    trainer.add_callback(Snapshot())
    trainer.train()
    assert [e["skipped_steps"] for e in trainer.state.log_history if "loss" in e] == [0, 1, 1]
    # Step 2 (the inf reward) changed nothing; steps 1 and 3 did.
    for name, value in snapshots[1].items():
        assert torch.equal(value, snapshots[0][name]), name
        assert torch.isfinite(value).all()
    assert any(not torch.equal(snapshots[2][n], snapshots[1][n]) for n in snapshots[1])


def test_consecutive_bad_steps_stop_training_with_weights_intact(tmp_path, tiny_policy, tiny_image_tokenizer):
    def always_inf(prompts, completions, **kwargs):
        return [float("inf")] + [0.0] * (len(prompts) - 1)  # one +inf in a group: non-finite advantages

    before = {n: p.detach().clone() for n, p in tiny_policy.named_parameters()}
    trainer = VAPiTrainer(
        model=tiny_policy,
        args=make_args(tmp_path, max_steps=10, max_consecutive_bad_steps=3),
        train_dataset=make_image_dataset(),
        image_tokenizer=tiny_image_tokenizer,
        reward_funcs=always_inf,
    )
    with pytest.raises(RuntimeError, match="3 consecutive optimizer steps had non-finite gradients"):
        trainer.train()
    for name, param in trainer.model.named_parameters():
        assert torch.equal(param, before[name]), name


def test_dataset_of_identical_images_trains(tmp_path, tiny_policy, tiny_image_tokenizer):
    image = PILImage.fromarray(np.full((32, 32, 3), 128, dtype=np.uint8))
    dataset = Dataset.from_dict({"image": [image] * 8, "class_label": [3] * 8})
    trainer = make_trainer(tmp_path, tiny_policy, tiny_image_tokenizer, dataset=dataset, max_steps=2)
    trainer.train()
    assert all(np.isfinite(e["loss"]) for e in trainer.state.log_history if "loss" in e)


def test_empty_dataset_is_rejected(tmp_path, tiny_policy, tiny_image_tokenizer):
    with pytest.raises(ValueError, match="empty"):
        make_trainer(tmp_path, tiny_policy, tiny_image_tokenizer, dataset=make_image_dataset().select([]))


def test_single_sample_groups_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="at least 2 generations"):
        make_args(tmp_path, num_generations=1, per_device_train_batch_size=2)


KILLED_RUN = textwrap.dedent(
    """
    import os, sys, torch
    sys.path.insert(0, {root!r})
    from tests.conftest import make_image_dataset, tiny_llamagen_config, tiny_vq_config
    from tests.test_trainer import make_args
    from vapi_trl import VAPiTrainer
    from vapi_trl.models import ImageTokenizerProcessor, LlamaGenForClassToImage

    torch.set_num_threads({threads})  # the parent's count: the resumed run must continue the same arithmetic
    torch.manual_seed(0)
    tokenizer = ImageTokenizerProcessor.from_vq_config(tiny_vq_config(), image_size=32)
    torch.manual_seed(0)
    policy = LlamaGenForClassToImage(tiny_llamagen_config())
    args = make_args(__import__("pathlib").Path({tmp!r}), max_steps=4, save_strategy="steps", save_steps=2)
    torch.manual_seed(0)
    trainer = VAPiTrainer(model=policy, args=args, train_dataset=make_image_dataset(), image_tokenizer=tokenizer)
    original = trainer._save_optimizer_and_scheduler

    def die_during_second_save(output_dir):
        if trainer.state.global_step == 4:
            os._exit(17)  # the process dies after the weights of checkpoint-4 are written, before its state
        original(output_dir)

    trainer._save_optimizer_and_scheduler = die_during_second_save
    trainer.train()
    """
)


@pytest.mark.slow
def test_kill_during_checkpoint_save_resumes_from_last_complete(tmp_path, tiny_image_tokenizer):
    script = tmp_path / "killed_run.py"
    script.write_text(KILLED_RUN.format(root=str(ROOT), tmp=str(tmp_path / "killed"), threads=torch.get_num_threads()))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 17, result.stderr[-2000:]

    output_dir = tmp_path / "killed" / "out"
    assert (output_dir / "checkpoint-4").is_dir() and not is_complete_checkpoint(str(output_dir / "checkpoint-4"))
    assert last_complete_checkpoint(str(output_dir)) == str(output_dir / "checkpoint-2")

    # The previous checkpoint loads, and resume=True continues from it to the same weights as an uninterrupted run.
    LlamaGenForClassToImage.from_pretrained(str(output_dir / "checkpoint-2"))

    def fresh_policy():
        torch.manual_seed(0)
        return LlamaGenForClassToImage(tiny_llamagen_config())

    torch.manual_seed(0)
    tokenizer = type(tiny_image_tokenizer).from_vq_config(tiny_vq_config(), 32)
    resumed = make_trainer(tmp_path / "killed", fresh_policy(), tokenizer, max_steps=4)
    resumed.train(resume_from_checkpoint=True)
    reference = make_trainer(tmp_path / "reference", fresh_policy(), tokenizer, max_steps=4)
    reference.train()
    assert resumed.state.global_step == 4
    for (name, a), b in zip(reference.model.named_parameters(), resumed.model.parameters()):
        assert_close_scaled(a, b, rel=1e-5, msg=name)


def _torch_load_calls_without_weights_only(path: pathlib.Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load":
            owner = node.func.value
            if isinstance(owner, ast.Name) and owner.id == "torch":
                weights_only = [k for k in node.keywords if k.arg == "weights_only"]
                if not weights_only or not (
                    isinstance(weights_only[0].value, ast.Constant) and weights_only[0].value.value is True
                ):
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return bad


def test_every_torch_load_is_weights_only_and_no_remote_code():
    sources = [
        p for folder in ("vapi_trl", "examples", "benchmarks", "scripts") for p in (ROOT / folder).rglob("*.py")
    ]
    assert sources
    offenders = [hit for path in sources for hit in _torch_load_calls_without_weights_only(path)]
    assert offenders == [], f"torch.load without weights_only=True: {offenders}"
    for path in sources:
        text = path.read_text()
        assert "trust_remote_code=True" not in text, f"{path} sets trust_remote_code=True"
        assert "pickle.load" not in text, f"{path} unpickles data"


def test_saved_checkpoints_hold_only_safetensors_and_json(tmp_path, tiny_policy, tiny_image_tokenizer):
    trainer = make_trainer(
        tmp_path, tiny_policy, tiny_image_tokenizer, max_steps=1, save_strategy="steps", save_steps=1
    )
    trainer.train()
    checkpoint = pathlib.Path(trainer.args.output_dir) / "checkpoint-1"
    model_files = {p.name for p in checkpoint.iterdir()}
    assert "model.safetensors" in model_files and "config.json" in model_files
    # Trainer's own optimizer/scheduler/RNG states are torch files it reads back itself with weights_only loading.
    assert not [name for name in model_files if name.endswith((".bin", ".pkl")) and name != "training_args.bin"]


def test_checkpoint_of_another_architecture_is_an_error(tmp_path, tiny_policy):
    tiny_policy.save_pretrained(tmp_path / "policy")
    deeper = tiny_llamagen_config()
    deeper.num_hidden_layers = 3
    with pytest.raises(
        ValueError, match=r"(?s)does not match.*Missing keys \(\d+\): model\.layers\.2\..*strict=False"
    ):
        LlamaGenForClassToImage.from_pretrained(tmp_path / "policy", config=deeper)
    wider = tiny_llamagen_config()
    wider.hidden_size, wider.intermediate_size = 64, 128
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
        LlamaGenForClassToImage.from_pretrained(tmp_path / "policy", config=wider)
    # strict=False is the explicit escape hatch
    model = LlamaGenForClassToImage.from_pretrained(tmp_path / "policy", config=deeper, strict=False)
    assert model.config.num_hidden_layers == 3
