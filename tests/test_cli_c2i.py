"""The C2I subcommands: --help, convert-llamagen, tokenize (gt_ids), sample, and an end-to-end train-c2i run."""

import json
import sys

import numpy as np
import pytest
import torch
from datasets import load_from_disk
from PIL import Image
from safetensors.torch import load_file

from vapi_trl import cli
from vapi_trl.commands.train_c2i import make_parser
from vapi_trl.data import load_c2i_dataset
from vapi_trl.models import ImageTokenizerProcessor, LlamaGenForClassToImage

from .test_llamagen_convert import GPT_OVERRIDES, official_gpt_state_dict

NEW_COMMANDS = ["convert-llamagen", "train-c2i", "tokenize", "sample", "fid"]

# wnid folders created out of order: labels must follow the sorted names (torchvision ImageFolder / ImageNet ids).
WNIDS = ["n02000000", "n01000000", "n03000000"]


def write_imagefolder(root, per_class: int = 3, size: int = 40):
    rng = np.random.default_rng(0)
    for wnid in WNIDS:
        (root / wnid).mkdir(parents=True)
        for index in range(per_class):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / wnid / f"{wnid}_{index}.JPEG", format="JPEG")
    return root


@pytest.fixture
def converted(tmp_path, tiny_policy, tiny_image_tokenizer):
    tiny_policy.save_pretrained(tmp_path / "policy")
    tiny_image_tokenizer.save_pretrained(tmp_path / "image_tokenizer")
    return str(tmp_path / "policy"), str(tmp_path / "image_tokenizer")


@pytest.mark.parametrize("command", NEW_COMMANDS)
def test_help_exits_zero(command, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main([command, "--help"])
    assert info.value.code == 0
    assert "usage: vapi-trl" in capsys.readouterr().out


def test_recipe_defaults_of_train_c2i():
    script_args, args, model_args = make_parser().parse_args_and_config(
        ["--learning_rate", "1e-6", "--image_tokenizer_path", "t", "--bf16", "False"]
    )
    assert (args.num_generations, args.ce_coef, args.epsilon, args.context_noise_prob) == (8, 0.1, 0.2, 0.0)
    assert (args.weight_decay, args.max_grad_norm, args.adam_beta1, args.adam_beta2) == (1e-4, 1.0, 0.9, 0.999)
    assert args.lpips_net == "vgg" and args.learning_rate == 1e-6 and model_args.lora_task_type is None
    with pytest.raises(ValueError, match="learning_rate"):
        make_parser().parse_args_and_config(["--bf16", "False"])


def test_convert_llamagen_command(tmp_path, capsys):
    torch.save({"model": official_gpt_state_dict()}, tmp_path / "c2i.pt")
    flags = ["--dim", "32", "--n-layer", "2", "--n-head", "4", "--n-kv-head", "2", "--intermediate-size", "64",
             "--vocab-size", "64", "--num-classes", "10"]  # fmt: skip
    assert cli.main(["convert-llamagen", "--gpt-ckpt", str(tmp_path / "c2i.pt"), "--image-size", "64",
                     "--output_dir", str(tmp_path / "out"), *flags]) == 0  # fmt: skip
    config = json.loads((tmp_path / "out" / "policy" / "config.json").read_text())
    assert config["hidden_size"] == GPT_OVERRIDES["hidden_size"] and config["block_size"] == 16
    assert set(load_file(tmp_path / "out" / "policy" / "model.safetensors")) >= {
        "lm_head.weight",
        "class_embed.weight",
    }
    assert (
        cli.main(["convert-llamagen", "--output_dir", str(tmp_path / "x")]) == 2
    )  # one-line user error, no traceback
    assert "vapi-trl convert-llamagen: error: Nothing to convert" in capsys.readouterr().err


def test_imagefolder_labels_follow_sorted_wnids(tmp_path):
    root = write_imagefolder(tmp_path / "train")
    dataset = load_c2i_dataset(train_dir=str(root), verify_images=False)
    assert dataset.features["class_label"].names == sorted(WNIDS)
    for row in dataset:
        assert sorted(WNIDS)[row["class_label"]] in row["image"].filename
    subset = load_c2i_dataset(train_dir=str(root), images_per_class=2, subset_seed=1)
    assert np.bincount(subset["class_label"]).tolist() == [2, 2, 2]


def test_sample_command(tmp_path, converted):
    policy, tokenizer = converted
    out = tmp_path / "samples"
    args = ["sample", "--model_name_or_path", policy, "--image_tokenizer_path", tokenizer, "--output_dir", str(out),
            "--num_samples", "3", "--batch_size", "2", "--resize", "0", "--label_scheme", "balanced"]  # fmt: skip
    assert cli.main(args) == 0
    assert np.load(out / "samples.npz")["arr_0"].shape == (3, 32, 32, 3)
    record = json.loads((out / "run.json").read_text())
    assert record["label_scheme"] == "balanced" and record["model_path"] == policy and record["resize"] is None


@pytest.mark.slow
def test_tokenize_then_train_c2i_end_to_end(tmp_path, converted, monkeypatch):
    policy, tokenizer = converted
    root = write_imagefolder(tmp_path / "train")
    tokens = tmp_path / "tokens"
    assert cli.main(["tokenize", "--image_tokenizer_path", tokenizer, "--train_dir", str(root),
                     "--images_per_class", "1", "--output_dir", str(tokens), "--batch_size", "2"]) == 0  # fmt: skip
    dataset = load_from_disk(str(tokens))
    assert len(dataset) == 3 and set(dataset.column_names) == {"image", "class_label", "gt_ids"}
    processor = ImageTokenizerProcessor.from_pretrained(tokenizer)
    assert dataset[0]["gt_ids"] == processor(dataset[0]["image"])["input_ids"][0].tolist()

    # With gt_ids the trainer must never run the VQ encoder.
    def no_encode(self, pixel_values):
        raise AssertionError("VQ encode called although the dataset has gt_ids")

    monkeypatch.setattr(ImageTokenizerProcessor, "encode", no_encode)
    out = tmp_path / "run"
    argv = [
        "--model_name_or_path", policy, "--image_tokenizer_path", tokenizer, "--dataset_name", str(tokens),
        "--output_dir", str(out), "--max_steps", "2", "--per_device_train_batch_size", "2", "--num_generations", "2",
        "--gradient_accumulation_steps", "1",
        "--learning_rate", "0.1",  # tiny random weights: the recipe's 1e-6 would not visibly move them
        "--bf16", "False", "--report_to", "none", "--lpips_net", "alex", "--lpips_random_backbone", "True",
        "--dataloader_num_workers", "0", "--verify_images", "False",
    ]  # fmt: skip
    monkeypatch.setattr(sys, "argv", ["vapi-trl", "train-c2i", *argv])
    assert cli.main() == 0
    before = LlamaGenForClassToImage.from_pretrained(policy).state_dict()
    after = LlamaGenForClassToImage.from_pretrained(str(out)).state_dict()
    assert all(not torch.equal(before[name], after[name]) for name in before)
    assert (out / "README.md").is_file()


@pytest.mark.slow
def test_train_c2i_from_imagefolder_with_lora(tmp_path, converted):
    from vapi_trl.commands.train_c2i import main

    policy, tokenizer = converted
    root = write_imagefolder(tmp_path / "train", per_class=1)
    out = tmp_path / "lora"
    assert main([
        "--model_name_or_path", policy, "--image_tokenizer_path", tokenizer, "--train_dir", str(root),
        "--output_dir", str(out), "--max_steps", "1", "--per_device_train_batch_size", "2", "--num_generations", "2",
        "--gradient_accumulation_steps", "1", "--learning_rate", "0.1", "--bf16", "False", "--report_to", "none",
        "--lpips_weight", "0", "--use_peft", "--lora_r", "2", "--lora_target_modules", "q_proj", "v_proj",
    ]) == 0  # fmt: skip
    assert (out / "adapter_config.json").is_file()
    assert json.loads((out / "adapter_config.json").read_text())["task_type"] is None
