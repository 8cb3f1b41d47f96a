"""Two-process CPU (gloo) run of `examples/train_janus.py` under `accelerate launch`: replicas stay identical."""

import importlib.util
import json
import os
import socket
import subprocess
import sys

import pytest

from .conftest import make_caption_dataset, make_tiny_janus, make_tiny_janus_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "examples", "train_janus.py")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def load_script(monkeypatch):
    spec = importlib.util.spec_from_file_location("train_janus", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "train_janus", module)
    spec.loader.exec_module(module)
    return module


def test_script_help_and_recipe_defaults(monkeypatch):
    train_janus = load_script(monkeypatch)
    script_args, training_args, model_args = train_janus.make_parser().parse_args_and_config(
        ["--dataset_name", "d", "--learning_rate", "1e-7", "--use_peft", "--bf16", "False"]
    )
    assert training_args.learning_rate == 1e-7 and training_args.context_noise_prob == 1.0
    assert training_args.num_generations == 8 and training_args.lpips_net == "alex" and training_args.cfg_scale == 1.0
    assert training_args.gradient_checkpointing and training_args.ddp_find_unused_parameters is False
    assert model_args.model_name_or_path == "deepseek-community/Janus-Pro-1B" and model_args.lora_task_type is None
    result = subprocess.run([sys.executable, SCRIPT, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "--caption_column" in result.stdout and "--context_noise_prob" in result.stdout


@pytest.mark.slow
def test_two_process_training_keeps_replicas_identical(tmp_path, monkeypatch):
    model_dir, data_dir, output_dir = tmp_path / "janus", tmp_path / "data", tmp_path / "out"
    model = make_tiny_janus()
    model.save_pretrained(model_dir)
    make_tiny_janus_tokenizer().save_pretrained(model_dir)
    make_caption_dataset(4).save_to_disk(str(data_dir))

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    # accelerate 1.15 runs `--cpu --num_processes 2` as ONE process (multi-CPU needs mpirun), so the torchrun launcher
    # (`--multi_gpu`) starts the two ranks and ACCELERATE_USE_CPU makes them gloo CPU processes.
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(free_port()), SCRIPT,
        "--model_name_or_path", str(model_dir), "--dataset_name", str(data_dir), "--output_dir", str(output_dir),
        "--max_steps", "2", "--per_device_train_batch_size", "2", "--num_generations", "2",
        "--gradient_accumulation_steps", "1",
        "--learning_rate", "1e-2",  # tiny random weights: the recipe's 1e-7 would not visibly move them
        "--bf16", "False", "--lpips_random_backbone", "True", "--report_to", "none", "--seed", "0",
        "--dataloader_num_workers", "0", "--dump_parameter_checksums", "True",
    ]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-4000:]

    checksums = [json.load(open(output_dir / f"_parameter_checksum_rank{rank}.json")) for rank in (0, 1)]
    assert checksums[0] == checksums[1], "the two ranks hold different parameters after training"

    from vapi_trl.models import JanusForImageGeneration

    train_janus = load_script(monkeypatch)
    initial = train_janus.parameter_checksum(JanusForImageGeneration.from_pretrained(model_dir))
    trained = train_janus.parameter_checksum(JanusForImageGeneration.from_pretrained(output_dir))
    assert trained == checksums[0]  # the saved folder is what the ranks trained
    assert trained["all"] != initial["all"]
    assert initial.keys() == trained.keys() and not any(".vqmodel." in key for key in trained)
    card = open(output_dir / "README.md").read()
    assert "pipeline_tag: text-to-image" in card and str(data_dir) in card
