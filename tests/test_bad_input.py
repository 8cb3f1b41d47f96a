"""
Bad inputs (issue 16): each case asserts the kind of error, that the message names the value and the fix, and that
the files already on disk are intact. `docs/troubleshooting.md` lists the same messages.
"""

import hashlib
import json
import logging
import math
import os
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
import torch
from datasets import Dataset, Features, Value
from datasets import Image as ImageFeature

from vapi_trl import VAPiTrainer, cli
from vapi_trl.commands._common import check_output_folder, resolve_resume_checkpoint
from vapi_trl.data import check_class_labels, check_image
from vapi_trl.evaluation.geneval import GenEvalSettings, sample_geneval
from vapi_trl.evaluation.metrics import load_images
from vapi_trl.models import LlamaGenForClassToImage, LlamaGenProcessor
from vapi_trl.provenance import OutputFolderError, fingerprint

from .conftest import (
    make_image_dataset,
    make_tiny_caption_encoder,
    make_tiny_llamagen_t2i,
    tiny_llamagen_config,
)
from .test_llamagen_convert import official_gpt_state_dict
from .test_trainer import make_args, make_trainer


def snapshot(folder) -> dict[str, str]:
    """sha256 of every file under `folder` (relative path -> digest): "pre-existing files are intact"."""
    result = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as handle:
                result[os.path.relpath(path, folder)] = hashlib.sha256(handle.read()).hexdigest()
    return result


def run_cli(argv, capsys) -> tuple[int, str]:
    """`vapi-trl argv` -> (exit code, stderr)."""
    capsys.readouterr()
    code = cli.main(argv)
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, command: str, *fragments: str) -> None:
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("vapi-trl ")]
    assert len(lines) == 1 and lines[0].startswith(f"vapi-trl {command}: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture
def saved(tmp_path, tiny_policy, tiny_image_tokenizer):
    tiny_policy.save_pretrained(tmp_path / "policy")
    tiny_image_tokenizer.save_pretrained(tmp_path / "image_tokenizer")
    return str(tmp_path / "policy"), str(tmp_path / "image_tokenizer")


def sample_argv(policy, tokenizer, out, *extra):
    return ["sample", "--model_name_or_path", policy, "--image_tokenizer_path", tokenizer, "--output_dir", str(out),
            "--num_samples", "3", "--batch_size", "2", "--resize", "0", "--device", "cpu", *extra]  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------------
# 1. No stale or foreign samples
# ---------------------------------------------------------------------------------------------------------------------


def test_sample_refuses_a_folder_of_foreign_pngs(tmp_path, saved, capsys):
    out = tmp_path / "samples"
    out.mkdir()
    for index in range(3):
        PIL.Image.new("RGB", (32, 32), (index, 0, 0)).save(out / f"{index:06d}.png")
    before = snapshot(out)
    code, err = run_cli(sample_argv(*saved, out), capsys)
    assert_one_line_error(code, err, "sample", "is not empty", "--overwrite", "000000.png")
    assert snapshot(out) == before and not (out / "samples.npz").exists()


def test_a_second_model_never_reuses_the_first_models_samples(tmp_path, saved, capsys):
    policy, tokenizer = saved
    out = tmp_path / "samples"
    assert cli.main(sample_argv(policy, tokenizer, out)) == 0
    before = snapshot(out)
    other = LlamaGenForClassToImage(tiny_llamagen_config())  # same architecture and settings, other weights
    torch.manual_seed(1)
    for parameter in other.parameters():
        torch.nn.init.normal_(parameter)
    other.save_pretrained(tmp_path / "other")
    code, err = run_cli(sample_argv(str(tmp_path / "other"), tokenizer, out), capsys)
    assert_one_line_error(code, err, "sample", "of another model", "model_fingerprint", "--overwrite")
    assert snapshot(out) == before


def test_the_same_model_from_another_path_resumes(tmp_path, saved, capsys):
    policy, tokenizer = saved
    out = tmp_path / "samples"
    assert cli.main(sample_argv(policy, tokenizer, out)) == 0
    os.rename(policy, tmp_path / "moved")  # identity is the content, not the path
    os.remove(out / "000002.png")
    capsys.readouterr()
    assert cli.main(sample_argv(str(tmp_path / "moved"), tokenizer, out)) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (report["generated_batches"], report["skipped_batches"]) == (1, 1)


def test_sample_refuses_other_settings_and_another_image_tokenizer(tmp_path, saved, tiny_image_tokenizer, capsys):
    policy, tokenizer = saved
    out = tmp_path / "samples"
    assert cli.main(sample_argv(policy, tokenizer, out)) == 0
    before = snapshot(out)
    code, err = run_cli(sample_argv(policy, tokenizer, out, "--temperature", "0.5"), capsys)
    assert_one_line_error(code, err, "sample", "temperature: 1.0 -> 0.5")
    with torch.no_grad():
        tiny_image_tokenizer.vq_model.quantize.embedding.weight.add_(0.01)
    tiny_image_tokenizer.save_pretrained(tmp_path / "tokenizer2")
    code, err = run_cli(sample_argv(policy, str(tmp_path / "tokenizer2"), out), capsys)
    assert_one_line_error(code, err, "sample", "image_tokenizer_fingerprint")
    assert snapshot(out) == before


def test_sample_refuses_a_record_without_fingerprints(tmp_path, saved, capsys):
    policy, tokenizer = saved
    out = tmp_path / "samples"
    assert cli.main(sample_argv(policy, tokenizer, out)) == 0
    record = json.loads((out / "run.json").read_text())
    del record["model_fingerprint"]  # as written by an earlier version: provenance unknown
    (out / "run.json").write_text(json.dumps(record))
    before = snapshot(out)
    code, err = run_cli(sample_argv(policy, tokenizer, out), capsys)
    assert_one_line_error(code, err, "sample", "model_fingerprint: None")
    assert snapshot(out) == before


def test_sample_overwrite_replaces_only_our_files(tmp_path, saved):
    out = tmp_path / "samples"
    out.mkdir()
    PIL.Image.new("RGB", (5, 5)).save(out / "000000.png")
    (out / "notes.txt").write_text("mine")
    assert cli.main(sample_argv(*saved, out, "--overwrite")) == 0
    assert np.load(out / "samples.npz")["arr_0"].shape == (3, 32, 32, 3)
    assert (out / "notes.txt").read_text() == "mine"


def test_geneval_refuses_another_prompt_file_and_another_model(tmp_path, tiny_image_tokenizer):
    policy, encoder = make_tiny_llamagen_t2i(seed=0).eval(), make_tiny_caption_encoder()
    settings = {"num_images": 1, "batch_size": 1, "family": "llamagen-t2i", "grid": False}
    out = tmp_path / "geneval"
    first = [('{"prompt": "a red cube"}', {"prompt": "a red cube"})]
    sample_geneval(policy, encoder, tiny_image_tokenizer, first, out, GenEvalSettings(**settings), progress=False)
    before = snapshot(out)
    second = [('{"prompt": "two dogs"}', {"prompt": "two dogs"})]
    with pytest.raises(OutputFolderError, match="another prompt"):
        sample_geneval(policy, encoder, tiny_image_tokenizer, second, out, GenEvalSettings(**settings), progress=False)
    with pytest.raises(OutputFolderError, match="policy_fingerprint"):
        sample_geneval(
            make_tiny_llamagen_t2i(seed=1).eval(), encoder, tiny_image_tokenizer, first, out,
            GenEvalSettings(**settings), progress=False,
        )  # fmt: skip
    assert snapshot(out) == before


def test_fingerprint_follows_content_not_identity(tiny_policy):
    copy = LlamaGenForClassToImage(tiny_policy.config)
    copy.load_state_dict(tiny_policy.state_dict())
    assert fingerprint(copy) == fingerprint(tiny_policy)
    with torch.no_grad():
        copy.lm_head.weight[0, 0] += 1e-3
    assert fingerprint(copy) != fingerprint(tiny_policy)


# ---------------------------------------------------------------------------------------------------------------------
# 2-3. Resume is honoured, a fresh run never destroys an earlier one
# ---------------------------------------------------------------------------------------------------------------------


def train_argv(policy, tokenizer, out, *extra):
    return ["train-c2i", "--model_name_or_path", policy, "--image_tokenizer_path", tokenizer,
            "--dataset_name", "unused", "--output_dir", str(out), "--learning_rate", "0.1", "--bf16", "False",
            "--report_to", "none", *extra]  # fmt: skip


def fake_checkpoint(out, step: int):
    folder = out / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"weights of the earlier run")
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return folder


@pytest.mark.parametrize("command", ["train-c2i", "train-t2i"])
def test_fresh_training_run_refuses_an_output_dir_with_checkpoints(tmp_path, saved, capsys, command):
    out = tmp_path / "run"
    fake_checkpoint(out, 1)
    before = snapshot(out)
    argv = train_argv(*saved, out)
    argv[0] = command
    code, err = run_cli(argv, capsys)
    assert_one_line_error(
        code, err, command, repr(str(out)), "--resume_from_checkpoint last", "--overwrite_output_dir"
    )
    assert snapshot(out) == before


def test_resume_last_without_a_checkpoint_is_refused(tmp_path, saved, capsys):
    out = tmp_path / "run"
    (out / "checkpoint-2").mkdir(parents=True)  # half-written: no trainer_state.json
    code, err = run_cli(train_argv(*saved, out, "--resume_from_checkpoint", "last"), capsys)
    assert_one_line_error(code, err, "train-c2i", "holds no complete checkpoint-N")
    assert os.listdir(out) == ["checkpoint-2"]


def test_resume_from_a_folder_that_is_not_a_checkpoint_is_refused(tmp_path, saved, capsys):
    code, err = run_cli(train_argv(*saved, tmp_path / "run", "--resume_from_checkpoint", str(tmp_path)), capsys)
    assert_one_line_error(code, err, "train-c2i", "is not a complete checkpoint folder")


def test_resume_true_and_last_pick_the_last_complete_checkpoint(tmp_path):
    out = tmp_path / "run"
    fake_checkpoint(out, 1)
    fake_checkpoint(out, 3)
    (out / "checkpoint-4").mkdir()  # killed while saving
    for value in ("true", "last", "LAST", True):
        args = type("Args", (), {"output_dir": str(out), "resume_from_checkpoint": value})()
        assert resolve_resume_checkpoint(args) == str(out / "checkpoint-3")


@pytest.mark.slow
def test_train_c2i_resumes_instead_of_restarting(tmp_path, saved):
    from vapi_trl.commands.train_c2i import main

    policy, tokenizer = saved
    dataset = make_image_dataset(num_images=4)
    dataset.save_to_disk(str(tmp_path / "data"))
    out = tmp_path / "run"
    common = [
        "--model_name_or_path", policy, "--image_tokenizer_path", tokenizer, "--dataset_name", str(tmp_path / "data"),
        "--output_dir", str(out), "--per_device_train_batch_size", "2", "--num_generations", "2",
        "--gradient_accumulation_steps", "1", "--learning_rate", "0.1", "--bf16", "False", "--report_to", "none",
        "--lpips_weight", "0", "--save_strategy", "steps", "--save_steps", "1", "--dataloader_num_workers", "0",
        "--verify_images", "False",
    ]  # fmt: skip
    assert main([*common, "--max_steps", "2"]) == 0
    first = snapshot(out / "checkpoint-1")
    assert main([*common, "--max_steps", "3", "--resume_from_checkpoint", "last"]) == 0
    state = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    assert [entry["step"] for entry in state["log_history"] if "loss" in entry] == [1, 2, 3]  # step 3 only is new
    assert snapshot(out / "checkpoint-1") == first  # the earlier run's checkpoints are not rewritten


def test_overwrite_output_dir_allows_a_fresh_run(tmp_path):
    out = tmp_path / "run"
    fake_checkpoint(out, 1)
    args = type("Args", (), {"output_dir": str(out), "resume_from_checkpoint": None, "overwrite_output_dir": True})()
    assert resolve_resume_checkpoint(args) is None


def test_demo_refuses_a_non_empty_out(tmp_path, capsys):
    (tmp_path / "report.json").write_text("{}")
    before = snapshot(tmp_path)
    code, err = run_cli(["demo", "--output_dir", str(tmp_path)], capsys)
    assert_one_line_error(code, err, "demo", "is not empty", "--overwrite")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "flag, value, fragment",
    [
        ("--learning-rate", "0", "learning_rate must be a finite number > 0, got 0.0"),
        ("--context-noise-prob", "1.5", "context_noise_prob (ξ) must be in [0, 1], got 1.5"),
        ("--eval-samples", "5000", "eval_samples must be ≤ 2000"),
        ("--num-generations", "1", "num_generations must be ≥ 2"),
        ("--threads", "0", "--threads must be ≥ 1"),
    ],
)
def test_demo_validates_its_arguments_before_scoring(tmp_path, capsys, flag, value, fragment):
    code, err = run_cli(["demo", "--output_dir", str(tmp_path / "d"), flag, value], capsys)
    assert_one_line_error(code, err, "demo", fragment)
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize(
    "command, extra",
    [("tokenize", ["--image_tokenizer_path", "t", "--train_dir", "x"]), ("encode-captions", ["--tar_shards", "x"])],
)
def test_dataset_writers_refuse_a_non_empty_out(tmp_path, capsys, command, extra):
    (tmp_path / "keep.arrow").write_bytes(b"earlier dataset")
    code, err = run_cli([command, *extra, "--output_dir", str(tmp_path)], capsys)
    assert_one_line_error(code, err, command, "is not empty", "--overwrite")
    assert (tmp_path / "keep.arrow").read_bytes() == b"earlier dataset"


# ---------------------------------------------------------------------------------------------------------------------
# 4. TRL's reward convention
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("not_applicable", [None, float("nan"), torch.tensor(float("nan"))], ids=["None", "nan", "t"])
def test_none_and_nan_rewards_are_ignored_as_in_trl(tmp_path, tiny_policy, tiny_image_tokenizer, not_applicable):
    # TRL turns an extra reward's None into NaN and sums with nansum: both mean "does not apply", never a fault.
    def sometimes(prompts, completions, **kwargs):
        return [not_applicable if index % 2 else 0.5 for index in range(len(prompts))]

    trainer = VAPiTrainer(
        model=tiny_policy, args=make_args(tmp_path, max_steps=2), train_dataset=make_image_dataset(),
        image_tokenizer=tiny_image_tokenizer, reward_funcs=sometimes,
    )  # fmt: skip
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "skipped_steps" in entry]
    assert logged[-1]["skipped_steps"] == 0 and trainer.state.global_step == 2
    means = [entry[key] for entry in logged for key in entry if key.startswith("rewards/sometimes")]
    assert means and all(math.isclose(value, 0.5) for value in means), logged  # the mean over the samples it scored


def test_a_reward_that_is_not_a_number_names_the_function(tmp_path, tiny_policy, tiny_image_tokenizer):
    def wordy(prompts, completions, **kwargs):
        return ["good"] * len(prompts)

    trainer = VAPiTrainer(
        model=tiny_policy, args=make_args(tmp_path, max_steps=1), train_dataset=make_image_dataset(),
        image_tokenizer=tiny_image_tokenizer, reward_funcs=wordy,
    )  # fmt: skip
    with pytest.raises(TypeError, match=r"reward function 'wordy' returned 'good'.*got str"):
        trainer.train()


def test_an_inf_reward_that_skips_nothing_does_not_say_it_does(tmp_path, tiny_policy, tiny_image_tokenizer, caplog):
    def infinite(prompts, completions, **kwargs):
        return [float("inf")] * len(prompts)  # every group constant: zero advantages, finite gradients

    trainer = VAPiTrainer(
        model=tiny_policy, args=make_args(tmp_path, max_steps=1), train_dataset=make_image_dataset(),
        image_tokenizer=tiny_image_tokenizer, reward_funcs=infinite,
    )  # fmt: skip
    with caplog.at_level(logging.WARNING):
        trainer.train()
    logged = [entry for entry in trainer.state.log_history if "skipped_steps" in entry]
    assert logged[-1]["skipped_steps"] == 0
    assert "will be skipped" not in caplog.text and "do not affect this step" in caplog.text


# ---------------------------------------------------------------------------------------------------------------------
# 5. No silent wrong inputs
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, error, fragment",
    [
        (
            {"num_generations": 0, "per_device_train_batch_size": 4},
            ValueError,
            "num_generations (G) must be ≥ 2, got 0",
        ),
        (
            {"num_generations": 1, "per_device_train_batch_size": 4},
            ValueError,
            "num_generations (G) must be ≥ 2, got 1",
        ),
        ({"epsilon": 0.0}, ValueError, "epsilon (the PPO clip) must be > 0, got epsilon=0.0"),
        ({"epsilon": -0.2}, ValueError, "epsilon (the PPO clip) must be > 0, got epsilon=-0.2"),
        ({"learning_rate": 0.0}, ValueError, "learning_rate must be > 0, got 0.0"),
        ({"cfg_scale": -1.0}, ValueError, "cfg_scale must be ≥ 0 (1.0 = no guidance), got -1.0"),
        ({"context_noise_prob": "0.5"}, TypeError, "context_noise_prob must be a number, got '0.5' (str)"),
        ({"ce_coef": None}, TypeError, "ce_coef must be a number, got None (NoneType)"),
    ],
)
def test_config_rejects_bad_values(tmp_path, overrides, error, fragment):
    with pytest.raises(error) as info:
        make_args(tmp_path, **overrides)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    "value, error, fragment",
    [
        (3.7, ValueError, "got 3.7"),
        (float("nan"), ValueError, "got nan"),
        ("cat", TypeError, "got 'cat' (str)"),
        (True, TypeError, "got True (bool)"),
        (None, TypeError, "got None"),
    ],
)
def test_bad_class_labels_are_rejected_not_truncated(tiny_policy, value, error, fragment):
    with pytest.raises(error, match="class_label must be an integer class id") as info:
        LlamaGenProcessor.from_policy(tiny_policy).prepare_condition([{"class_label": value}])
    assert fragment in str(info.value)


def test_whole_float_and_numpy_labels_are_accepted(tiny_policy):
    processor = LlamaGenProcessor.from_policy(tiny_policy)
    labels = processor.prepare_condition([{"class_label": 3.0}, {"class_label": np.int64(4)}])["class_labels"]
    assert labels.tolist() == [3, 4] and labels.dtype == torch.long


def test_a_float_label_column_is_checked_at_load_time():
    dataset = Dataset.from_dict({"class_label": [1.0, 2.0, 3.7]})
    with pytest.raises(ValueError, match=r"'data', row 2: class_label must be an integer class id, got 3.7"):
        check_class_labels(dataset, name="'data'")
    check_class_labels(Dataset.from_dict({"class_label": [1.0, 2.0]}))  # whole numbers pass


def test_label_column_given_explicitly_is_the_one_used(tmp_path):
    from vapi_trl.data import load_c2i_dataset

    rng = np.random.default_rng(0)
    images = [PIL.Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)) for _ in range(2)]
    features = Features({"image": ImageFeature(), "class_label": Value("int64"), "fine": Value("int64")})
    Dataset.from_dict({"image": images, "class_label": [0, 0], "fine": [5, 7]}, features=features).save_to_disk(
        str(tmp_path / "d")
    )
    explicit = load_c2i_dataset(dataset_name=str(tmp_path / "d"), label_column="fine", verify_images=False)
    assert explicit["class_label"] == [5, 7]  # not silently replaced by the existing class_label column
    default = load_c2i_dataset(dataset_name=str(tmp_path / "d"), verify_images=False)
    assert default["class_label"] == [0, 0]  # no `label` column: tokenize's class_label is the default
    with pytest.raises(ValueError, match=r"no column\(s\) \['coarse'\]"):
        load_c2i_dataset(dataset_name=str(tmp_path / "d"), label_column="coarse", verify_images=False)


def test_8_bit_valued_I_image_is_not_black(tiny_image_tokenizer):
    array = np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8)
    reference = tiny_image_tokenizer.preprocess(PIL.Image.fromarray(array))
    as_int32 = PIL.Image.fromarray(array.astype(np.int32))
    torch.testing.assert_close(tiny_image_tokenizer.preprocess(as_int32), reference)


def test_16_bit_I_image_is_scaled(tiny_image_tokenizer):
    array = np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8)
    reference = tiny_image_tokenizer.preprocess(PIL.Image.fromarray(array))
    sixteen = PIL.Image.fromarray(array.astype(np.int32) * 257)
    torch.testing.assert_close(tiny_image_tokenizer.preprocess(sixteen), reference)


def test_float_F_image_in_unit_range_is_scaled(tiny_image_tokenizer):
    array = np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8)
    reference = tiny_image_tokenizer.preprocess(PIL.Image.fromarray(array))
    unit = PIL.Image.fromarray(array.astype(np.float32) / 255.0)
    torch.testing.assert_close(tiny_image_tokenizer.preprocess(unit), reference, atol=1e-6, rtol=0)


def test_float_F_image_out_of_range_is_rejected(tiny_image_tokenizer):
    negative = PIL.Image.fromarray(np.full((8, 8), -1.0, dtype=np.float32))
    with pytest.raises(ValueError, match=r"mode 'F'.*values in \[-1.0, -1.0\].*Convert it to 8-bit"):
        tiny_image_tokenizer.preprocess(negative)


def test_empty_image_is_rejected_and_dropped(tiny_image_tokenizer):
    empty = PIL.Image.new("RGB", (0, 0))
    with pytest.raises(ValueError, match=r"Image 0 is empty \(0×0 pixels\)"):
        tiny_image_tokenizer.preprocess(empty)
    with pytest.raises(ValueError, match=r"Image 0 is empty \(shape \[0, 4, 3\]\)"):
        tiny_image_tokenizer.preprocess(np.zeros((0, 4, 3), dtype=np.uint8))
    assert check_image(empty) == "empty image (0, 0)"  # datasets: dropped with the undecodable images


def test_gt_ids_outside_the_codebook_are_rejected(tmp_path, tiny_policy, tiny_image_tokenizer):
    trainer = make_trainer(tmp_path, tiny_policy, tiny_image_tokenizer)
    image = PIL.Image.new("RGB", (32, 32))
    rows = [{"image": image, "class_label": 0, "gt_ids": [0] * 15 + [64]}]
    with pytest.raises(ValueError, match=r"gt_ids hold codes in \[0, 64\], outside the image codebook \[0, 64\)"):
        trainer._targets(rows)
    rows[0]["gt_ids"] = [-1] + [0] * 15
    with pytest.raises(ValueError, match=r"outside the image codebook"):
        trainer._targets(rows)


@pytest.mark.parametrize(
    "flag, value, fragment", [("--max_samples", "0", "--max_samples must be ≥ 1"), ("--batch_size", "0", "≥ 1")]
)
def test_fid_rejects_non_positive_counts(tmp_path, capsys, flag, value, fragment):
    code, err = run_cli(["fid", str(tmp_path / "a.npz"), str(tmp_path / "b.npz"), flag, value], capsys)
    assert_one_line_error(code, err, "fid", fragment)


@pytest.mark.parametrize(
    "flag, value, fragment",
    [
        ("--num_samples", "0", "num_samples (0)"),
        ("--cfg_scale", "-2", "cfg_scale must be ≥ 0 (1.0 = no guidance), got -2.0"),
    ],
)
def test_sample_rejects_bad_values_before_writing(tmp_path, saved, capsys, flag, value, fragment):
    code, err = run_cli([*sample_argv(*saved, tmp_path / "s"), flag, value], capsys)
    assert_one_line_error(code, err, "sample", fragment)
    assert not (tmp_path / "s").exists()


def test_geneval_rejects_negative_guidance():
    with pytest.raises(ValueError, match=r"cfg_scale must be ≥ 0 \(1.0 = no guidance\), got -1"):
        GenEvalSettings(family="janus", cfg_scale=-1.0).resolve()


# ---------------------------------------------------------------------------------------------------------------------
# 6. One-line CLI errors; corrupt files name the file
# ---------------------------------------------------------------------------------------------------------------------


def test_corrupt_and_truncated_npz_name_the_file(tmp_path):
    good = tmp_path / "good.npz"
    np.savez(good, arr_0=np.zeros((2, 4, 4, 3), dtype=np.uint8))
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:60])
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip at all")
    for path in (truncated, garbage):
        with pytest.raises(ValueError, match=rf"{path.name}' is not a readable \.npz.*truncated or corrupt"):
            load_images(str(path))
    np.savez(tmp_path / "other.npz", images=np.zeros((1, 4, 4, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"has no `arr_0` \(found \['images'\]\)"):
        load_images(str(tmp_path / "other.npz"))


def test_debug_flag_and_environment_variable_show_the_traceback(tmp_path, saved, monkeypatch):
    argv = sample_argv(*saved, tmp_path / "s", "--num_samples", "0")
    with pytest.raises(ValueError, match="num_samples"):
        cli.main(["--debug", *argv])
    monkeypatch.setenv("VAPI_TRL_DEBUG", "1")
    with pytest.raises(ValueError, match="num_samples"):
        cli.main(argv)


def test_truncated_safetensors_names_the_file(tmp_path, saved, capsys):
    policy, tokenizer = saved
    weights = os.path.join(policy, "model.safetensors")
    with open(weights, "rb") as handle:
        data = handle.read()
    with open(weights, "wb") as handle:
        handle.write(data[: len(data) // 2])
    code, err = run_cli(sample_argv(policy, tokenizer, tmp_path / "s"), capsys)
    assert_one_line_error(code, err, "sample", f"{weights!r} is truncated or corrupt", "convert it again")


def test_a_full_disk_names_the_file(tmp_path, saved, capsys, monkeypatch):
    import errno

    import vapi_trl.evaluation.sample as sampling

    def full(image, path):
        raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr(sampling, "_save_png", full)
    code, err = run_cli(sample_argv(*saved, tmp_path / "s"), capsys)
    assert_one_line_error(code, err, "sample", "No space left on device", "000000.png")


@pytest.mark.parametrize("content", [b"", b"garbage bytes, not a checkpoint", b"PK\x03\x04truncated zip"])
def test_convert_var_corrupt_files_name_the_file_without_unsafe_advice(tmp_path, capsys, content):
    path = tmp_path / "vae.pth"
    path.write_bytes(content)
    code, err = run_cli(["convert-var", "--vae-ckpt", str(path), "--output_dir", str(tmp_path / "out")], capsys)
    assert_one_line_error(code, err, "convert-var", "vae.pth' is not a PyTorch checkpoint that can be read safely")
    assert "weights_only=False" not in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("obj, found", [(torch.zeros(3), "Tensor"), (5, "int"), ({}, "[]")])
def test_convert_var_file_without_a_state_dict(tmp_path, capsys, obj, found):
    torch.save(obj, tmp_path / "vae.pth")
    code, err = run_cli(
        ["convert-var", "--vae-ckpt", str(tmp_path / "vae.pth"), "--output_dir", str(tmp_path / "o")], capsys
    )
    assert_one_line_error(code, err, "convert-var", f"does not hold a state dict of tensors (found: {found})")


def test_convert_var_on_a_llamagen_file_says_which_converter(tmp_path, capsys):
    torch.save({"model": official_gpt_state_dict()}, tmp_path / "c2i.pt")
    code, err = run_cli(
        ["convert-var", "--vae-ckpt", str(tmp_path / "c2i.pt"), "--output_dir", str(tmp_path / "o")], capsys
    )
    assert_one_line_error(code, err, "convert-var", "is not an official VAR VQ-VAE checkpoint", "convert-llamagen")


def test_convert_var_missing_file(tmp_path, capsys):
    code, err = run_cli(
        ["convert-var", "--vae-ckpt", str(tmp_path / "none.pth"), "--output_dir", str(tmp_path / "o")], capsys
    )
    assert_one_line_error(code, err, "convert-var", "none.pth' does not exist")


def test_convert_llamagen_corrupt_file_without_unsafe_advice(tmp_path, capsys):
    (tmp_path / "c2i.pt").write_bytes(b"\x80\x02garbage")
    argv = [
        "convert-llamagen",
        "--gpt-ckpt",
        str(tmp_path / "c2i.pt"),
        "--image-size",
        "256",
        "--output_dir",
        str(tmp_path / "o"),
    ]
    code, err = run_cli(argv, capsys)
    assert_one_line_error(code, err, "convert-llamagen", "c2i.pt' is not a PyTorch checkpoint")
    assert "weights_only=False" not in err


def test_converters_refuse_a_non_empty_out(tmp_path, capsys):
    out = tmp_path / "out"
    (out / "policy").mkdir(parents=True)
    (out / "policy" / "model.safetensors").write_bytes(b"earlier conversion")
    before = snapshot(out)
    torch.save({"model": official_gpt_state_dict()}, tmp_path / "c2i.pt")
    argv = ["convert-llamagen", "--gpt-ckpt", str(tmp_path / "c2i.pt"), "--image-size", "64", "--output_dir", str(out)]
    assert_one_line_error(*run_cli(argv, capsys), "convert-llamagen", "is not empty", "--overwrite")
    argv = ["convert-var", "--vae-ckpt", str(tmp_path / "c2i.pt"), "--output_dir", str(out)]
    assert_one_line_error(*run_cli(argv, capsys), "convert-var", "is not empty", "--overwrite")
    assert snapshot(out) == before
    with pytest.raises(ValueError, match="is a file, not a folder"):
        check_output_folder(str(tmp_path / "c2i.pt"), overwrite=False)


# ---------------------------------------------------------------------------------------------------------------------
# 7. Fast, quiet start
# ---------------------------------------------------------------------------------------------------------------------


def test_cli_help_imports_no_heavy_library():
    code = (
        "import sys, contextlib, io\n"
        "from vapi_trl.cli import main\n"
        "for argv in (['--help'], ['sample', '--help'], ['convert-var', '--help'], ['fid', '--help']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "        main(argv)\n"
        "print(sorted(name for name in ('torch', 'transformers', 'trl', 'datasets') if name in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_training_help_hides_rejected_grpo_options(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train-c2i", "--help"])
    text = capsys.readouterr().out
    assert "--overwrite_output_dir" in text and "--context_noise_prob" in text
    for hidden in ("--use_vllm", "--vllm_mode", "--beta ", "--min_p", "--repetition_penalty", "--delta "):
        assert hidden not in text, hidden


def test_train_c2i_defaults_to_fp32_without_bf16_support():
    from vapi_trl.commands.train_c2i import make_parser

    _, args, _ = make_parser().parse_args_and_config(["--learning_rate", "1e-6", "--use_cpu", "True"])
    assert args.bf16 is False  # recipe: bf16 where supported, fp32 on CPU instead of transformers' bf16 error


# ---------------------------------------------------------------------------------------------------------------------
# 8. Converters never guess silently
# ---------------------------------------------------------------------------------------------------------------------


def test_convert_llamagen_requires_the_image_size(tmp_path, capsys):
    torch.save({"model": official_gpt_state_dict()}, tmp_path / "t2i.pt")
    argv = ["convert-llamagen", "--gpt-ckpt", str(tmp_path / "t2i.pt"), "--output_dir", str(tmp_path / "o")]
    code, err = run_cli(argv, capsys)
    assert_one_line_error(code, err, "convert-llamagen", "--image_size is required", "256", "384", "512")
    assert not (tmp_path / "o").exists()


def test_convert_var_requires_heads_for_dot_product_attention(tmp_path, capsys):
    from vapi_trl.models.var.convert_var_to_hf import export_official_state_dict

    from .test_var import make_policy, make_tokenizer

    tokenizer = make_tokenizer()
    official = export_official_state_dict(make_policy(tokenizer, attn_l2_norm=False))
    torch.save(official, tmp_path / "var.pth")
    torch.save(tokenizer.vq_model.state_dict(), tmp_path / "vae.pth")
    argv = ["convert-var", "--vae-ckpt", str(tmp_path / "vae.pth"), "--var-ckpt", str(tmp_path / "var.pth"),
            "--output_dir", str(tmp_path / "o")]  # fmt: skip
    code, err = run_cli(argv, capsys)
    assert_one_line_error(
        code, err, "convert-var", "dot-product attention", "pass --num_attention_heads", "heads = depth, here 2"
    )
    assert not (tmp_path / "o").exists()
    assert cli.main([*argv, "--num-heads", "4"]) == 0
    assert "inferred: num_hidden_layers=2, hidden_size=32, num_attention_heads=4" in capsys.readouterr().out
