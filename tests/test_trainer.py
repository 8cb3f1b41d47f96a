import glob
import os

import pytest
import torch
from safetensors.torch import load_file

from vapi_trl import VAPiConfig, VAPiTrainer
from vapi_trl.dropout import dropout_disabled, eval_mode
from vapi_trl.models import LlamaGenForClassToImage
from vapi_trl.objective import filtered_log_probs
from vapi_trl.rewards import build_lpips

from .conftest import assert_close_scaled, make_image_dataset, official_g_fold_loss

pytestmark = pytest.mark.numerics


def make_args(tmp_path, **overrides) -> VAPiConfig:
    values = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,  # 2 images × G=2 per micro-batch
        num_generations=2,
        max_steps=3,
        learning_rate=1e-2,  # tiny random weights: the recipe's 1e-6 would not visibly move them
        bf16=False,
        report_to="none",
        save_strategy="no",
        lpips_net="alex",
        lpips_random_backbone=True,  # no ImageNet backbone offline; the test only needs a fixed network
        seed=0,
        dataloader_num_workers=0,
    )
    values.update(overrides)
    return VAPiConfig(**values)


def make_trainer(tmp_path, policy, image_tokenizer, dataset=None, **overrides) -> VAPiTrainer:
    torch.manual_seed(0)
    return VAPiTrainer(
        model=policy,
        args=make_args(tmp_path, **overrides),
        train_dataset=dataset if dataset is not None else make_image_dataset(),
        image_tokenizer=image_tokenizer,
    )


def frozen_state(module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in module.state_dict().items()}


@pytest.mark.slow
def test_train_updates_policy_only_and_checkpoints_reload(tmp_path, tiny_policy, tiny_image_tokenizer):
    trainer = make_trainer(tmp_path, tiny_policy, tiny_image_tokenizer, save_strategy="steps", save_steps=3)
    trainable = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    vq_before = frozen_state(trainer.image_tokenizer.vq_model)
    lpips_before = frozen_state(trainer.pixel_reward.lpips_model)

    trainer.train()

    history = trainer.state.log_history
    assert trainer.state.global_step == 3
    losses = [entry["loss"] for entry in history if "loss" in entry]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    for name, before in trainable.items():
        assert not torch.equal(before, trainer.model.get_parameter(name)), f"{name} did not change"
    for name, tensor in trainer.image_tokenizer.vq_model.state_dict().items():
        assert torch.equal(tensor, vq_before[name]), f"frozen VQ tensor {name} changed"
    for name, tensor in trainer.pixel_reward.lpips_model.state_dict().items():
        assert torch.equal(tensor, lpips_before[name]), f"frozen LPIPS tensor {name} changed"
    # Frozen modules never reach the optimizer.
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimised == {id(p) for p in trainer.model.parameters() if p.requires_grad}

    # Metrics a VA-π user reads, through the normal Trainer logging.
    logged = history[0]
    for key in (
        "reward", "reward_std", "mse", "lpips", "policy_loss", "ce", "entropy", "token_accuracy",
        "clip_ratio/region_mean", "advantages/mean", "frac_reward_zero_std", "rewards/pixel_reconstruction/mean",
    ):  # fmt: skip
        assert key in logged, f"{key} not logged"
    assert logged["mse"] > 0 and logged["reward"] < 0

    checkpoint = os.path.join(trainer.args.output_dir, "checkpoint-3")
    weights = glob.glob(os.path.join(checkpoint, "*.safetensors"))
    assert (
        weights
        and not glob.glob(os.path.join(checkpoint, "*.bin"))
        or all(os.path.basename(p) == "training_args.bin" for p in glob.glob(os.path.join(checkpoint, "*.bin")))
    )
    keys = set().union(*(load_file(path).keys() for path in weights))
    assert keys and not any(k.startswith(("vq", "lpips", "encoder", "decoder", "quantize", "net.")) for k in keys)
    assert not os.path.exists(os.path.join(checkpoint, "tokenizer.json"))
    card = open(os.path.join(trainer.args.output_dir, "README.md")).read()  # GRPO writes the card at each save
    assert card.startswith("---\n") and "pipeline_tag: unconditional-image-generation" in card

    reloaded = LlamaGenForClassToImage.from_pretrained(checkpoint)
    labels = torch.tensor([1, 2])
    context = torch.randint(0, 64, (2, 15))
    trainer.model.eval()  # `train()` leaves the policy in train mode, where dropout is live
    with torch.no_grad():
        expected = trainer.model(class_labels=labels, context_ids=context).logits
        assert torch.equal(reloaded(class_labels=labels, context_ids=context).logits, expected)


@pytest.mark.slow
def test_resume_from_checkpoint_matches_uninterrupted_run(tmp_path, tiny_image_tokenizer):
    from .conftest import tiny_llamagen_config

    def fresh_policy():
        torch.manual_seed(0)
        return LlamaGenForClassToImage(tiny_llamagen_config())

    full = make_trainer(tmp_path / "full", fresh_policy(), tiny_image_tokenizer, max_steps=4)
    full.train()

    first = make_trainer(
        tmp_path / "resumed", fresh_policy(), tiny_image_tokenizer, max_steps=4, save_strategy="steps", save_steps=2
    )
    first.train()  # leaves checkpoint-2 and checkpoint-4; resume from the middle one
    second = make_trainer(tmp_path / "resumed", fresh_policy(), tiny_image_tokenizer, max_steps=4)
    second.train(resume_from_checkpoint=os.path.join(first.args.output_dir, "checkpoint-2"))

    assert second.state.global_step == 4
    for (name, a), b in zip(full.model.named_parameters(), second.model.parameters()):
        assert_close_scaled(a, b, rel=1e-5, msg=f"{name} differs after resume")


def test_grouped_loss_equals_naive_per_sample_loss(tmp_path, tiny_policy, tiny_image_tokenizer):
    """One forward per image for its G samples equals G separate forwards (the official formulation), exactly where
    both are deterministic (eval loss mode); the train-mode (dropout) case is `test_dropout_equivalence.py`."""
    trainer = make_trainer(
        tmp_path,
        tiny_policy,
        tiny_image_tokenizer,
        num_generations=4,
        per_device_train_batch_size=8,
        loss_forward_mode="eval",
    )
    rows = [row for row in make_image_dataset(2) for _ in range(4)]
    trainer.model.train()
    inputs = trainer._generate_and_score_completions(rows)
    inputs["advantages"] = torch.randn_like(inputs["advantages"])  # non-trivial advantages
    model = trainer.model

    model.zero_grad()
    grouped = trainer._compute_loss(model, inputs)
    grouped.backward()
    grouped_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    # Naive: every (image, sample) row runs its own forward, with its own CE, as in the official trainer.
    model.zero_grad()
    with dropout_disabled(model):
        naive = official_g_fold_loss(trainer, model, inputs) / trainer.args.gradient_accumulation_steps
    naive.backward()

    assert grouped.item() == pytest.approx(naive.item(), abs=1e-5)
    for name, grad in grouped_grads.items():
        assert_close_scaled(grad, model.get_parameter(name).grad, msg=name)


def test_one_policy_pass_per_image_serves_all_samples(tmp_path, tiny_policy, tiny_image_tokenizer):
    trainer = make_trainer(
        tmp_path, tiny_policy, tiny_image_tokenizer, num_generations=4, per_device_train_batch_size=8, max_steps=2
    )
    batch_sizes = []
    trainer.model.model.register_forward_hook(lambda module, args, kwargs_out: None)
    handle = trainer.model.model.register_forward_pre_hook(
        lambda module, args, kwargs: batch_sizes.append(kwargs["inputs_embeds"].shape[0]), with_kwargs=True
    )
    trainer.train()
    handle.remove()
    # Per optimizer step: one no-grad sampling forward and one loss forward, each on U = 8 / 4 = 2 image rows.
    assert batch_sizes == [2, 2, 2, 2]


def test_samples_share_context_and_log_probs_come_from_sampling_pass(tmp_path, tiny_policy, tiny_image_tokenizer):
    trainer = make_trainer(
        tmp_path, tiny_policy, tiny_image_tokenizer, num_generations=3, per_device_train_batch_size=6
    )
    rows = [row for row in make_image_dataset(2) for _ in range(3)]
    inputs = trainer._generate_and_score_completions(rows)
    assert inputs["completion_ids"].shape == (2, 3, 16)
    assert inputs["context_ids"].shape == (2, 15) and inputs["target_ids"].shape == (2, 16)
    assert inputs["advantages"].shape == (2, 3)
    assert trainer.model.training  # as under `train()`: sampling must still run in eval mode
    with torch.no_grad(), eval_mode(trainer.model):
        logits = trainer.model(class_labels=inputs["condition.class_labels"], context_ids=inputs["context_ids"]).logits
    expected = filtered_log_probs(logits).gather(-1, inputs["completion_ids"].transpose(1, 2)).transpose(1, 2)
    assert_close_scaled(inputs["old_per_token_logps"], expected)
    assert torch.allclose(inputs["advantages"].mean(1), torch.zeros(2), atol=1e-5)


def test_num_iterations_replays_buffer_with_clipping(tmp_path, tiny_policy, tiny_image_tokenizer):
    trainer = make_trainer(
        tmp_path,
        tiny_policy,
        tiny_image_tokenizer,
        num_iterations=2,
        max_steps=2,
        learning_rate=0.05,
        loss_forward_mode="eval",
    )
    trainer.train()
    ratios = [(e["ratio/min"], e["ratio/max"]) for e in trainer.state.log_history if "ratio/min" in e]
    assert ratios[0] == pytest.approx((1.0, 1.0), abs=1e-5)  # first pass over the buffer: on-policy
    assert ratios[1] != pytest.approx((1.0, 1.0), abs=1e-5)  # replay: old log-probs from the sampling pass


def test_extra_reward_function_is_weighted_in(tmp_path, tiny_policy, tiny_image_tokenizer):
    calls = []

    def brightness(prompts, completions, completion_ids, **kwargs):
        calls.append((len(prompts), completions[0].shape, kwargs["class_label"][:2]))
        return [float(image.mean()) for image in completions]

    args = make_args(tmp_path, reward_weights=[1.0, 0.5], max_steps=1)
    trainer = VAPiTrainer(
        model=tiny_policy,
        args=args,
        train_dataset=make_image_dataset(),
        image_tokenizer=tiny_image_tokenizer,
        reward_funcs=brightness,
    )
    trainer.train()
    assert calls and calls[0][0] == 4 and calls[0][1] == (3, 32, 32)
    assert "rewards/brightness/mean" in trainer.state.log_history[0]

    with pytest.raises(ValueError, match="pixel-reconstruction reward first"):
        VAPiTrainer(
            model=tiny_policy,
            args=make_args(tmp_path, reward_weights=[0.5]),
            train_dataset=make_image_dataset(),
            image_tokenizer=tiny_image_tokenizer,
            reward_funcs=brightness,
        )


def test_lora_trains_adapters_only(tmp_path, tiny_policy, tiny_image_tokenizer):
    from peft import LoraConfig

    base = {n: p.detach().clone() for n, p in tiny_policy.named_parameters()}
    trainer = VAPiTrainer(
        model=tiny_policy,
        args=make_args(tmp_path, max_steps=2, learning_rate=0.05),
        train_dataset=make_image_dataset(),
        image_tokenizer=tiny_image_tokenizer,
        peft_config=LoraConfig(task_type=None, r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    trainer.train()
    trained = dict(trainer.model.named_parameters())
    lora_b = [n for n in trained if "lora_B" in n]
    assert lora_b and any(not torch.equal(trained[n], torch.zeros_like(trained[n])) for n in lora_b)
    for name, param in trainer.model.get_base_model().named_parameters():
        if "lora_" not in name:
            original = name.replace(".base_layer", "")
            assert torch.equal(param, base[original]), f"base weight {name} changed under LoRA"


@pytest.mark.parametrize("loss_forward_mode", ["eval", "train"])
def test_lora_policy_samples_in_eval_mode(tmp_path, tiny_policy, tiny_image_tokenizer, loss_forward_mode):
    """Sampling runs with every dropout off (LoRA dropout included): in eval loss mode the first-pass ratio is exactly 1;
    in train loss mode the loss forward carries the policy's dropout and the ratio moves off 1."""
    from peft import LoraConfig

    trainer = VAPiTrainer(
        model=tiny_policy,
        args=make_args(tmp_path, max_steps=2, learning_rate=0.05, loss_forward_mode=loss_forward_mode),
        train_dataset=make_image_dataset(),
        image_tokenizer=tiny_image_tokenizer,
        peft_config=LoraConfig(task_type=None, r=4, lora_alpha=8, lora_dropout=0.5, target_modules=["q_proj"]),
    )
    trainer.train()
    ratios = [(e["ratio/min"], e["ratio/max"]) for e in trainer.state.log_history if "ratio/min" in e]
    assert len(ratios) == 2
    for low, high in ratios:
        if loss_forward_mode == "eval":
            assert low == 1.0 and high == 1.0
        else:
            assert low < 0.99 and high > 1.01


def test_kl_reference_built_only_when_enabled(tmp_path, tiny_policy, tiny_image_tokenizer):
    trainer = make_trainer(tmp_path, tiny_policy, tiny_image_tokenizer, max_steps=1)
    assert trainer.ref_model is None
    trainer = make_trainer(tmp_path, tiny_policy, tiny_image_tokenizer, max_steps=1, kl_coef=0.01)
    assert trainer.ref_model is not None
    assert not any(p.requires_grad for p in trainer.ref_model.parameters())
    trainer.train()
    assert trainer.state.log_history[0]["kl"] >= 0


def test_kl_with_lora_uses_the_adapter_free_base_as_reference(tmp_path, tiny_policy, tiny_image_tokenizer):
    from peft import LoraConfig

    trainer = VAPiTrainer(
        model=tiny_policy,
        args=make_args(tmp_path, max_steps=2, learning_rate=0.05, kl_coef=0.1, loss_forward_mode="eval"),
        train_dataset=make_image_dataset(),
        image_tokenizer=tiny_image_tokenizer,
        peft_config=LoraConfig(task_type=None, r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    assert trainer.ref_model is None  # no copy: the base model with adapters disabled is the reference
    trainer.train()
    kls = [entry["kl"] for entry in trainer.state.log_history if "kl" in entry]
    assert kls[0] == pytest.approx(0.0, abs=1e-6)  # LoRA starts as the identity
    assert kls[1] > 0  # after one update the policy has moved away from the base


def test_image_grid_logged_to_tensorboard(tmp_path, tiny_policy, tiny_image_tokenizer, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))
    trainer = make_trainer(tmp_path, tiny_policy, tiny_image_tokenizer, max_steps=1, report_to=["tensorboard"])
    trainer.train()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert "train/samples" in events.Tags()["images"]
    assert "train/reward" in events.Tags()["scalars"]


def test_model_card_names_method_and_recipe(tmp_path, tiny_policy, tiny_image_tokenizer):
    trainer = make_trainer(tmp_path, tiny_policy, tiny_image_tokenizer, max_steps=1, context_noise_prob=0.25)
    os.makedirs(trainer.args.output_dir, exist_ok=True)
    trainer.create_model_card(model_name="aligned")
    card = open(os.path.join(trainer.args.output_dir, "README.md")).read()
    assert "2512.19680" in card and "| context noise ξ | 0.25 |" in card and "vapi" in card


def test_invalid_inputs_raise_clear_errors(tmp_path, tiny_policy, tiny_image_tokenizer):
    from vapi_trl.models import ImageTokenizerProcessor

    from .conftest import tiny_vq_config

    with pytest.raises(ValueError, match="image_tokenizer"):
        VAPiTrainer(model=tiny_policy, args=make_args(tmp_path), train_dataset=make_image_dataset())
    wrong_codebook = ImageTokenizerProcessor.from_vq_config(tiny_vq_config(codebook_size=32), image_size=32)
    with pytest.raises(ValueError, match="32"):
        make_trainer(tmp_path, tiny_policy, wrong_codebook)
    with pytest.raises(ValueError, match="missing the column"):
        make_trainer(
            tmp_path, tiny_policy, tiny_image_tokenizer, dataset=make_image_dataset().remove_columns("class_label")
        )
    bad_labels = make_image_dataset(num_classes=50).map(lambda row: {"class_label": 42})
    trainer = make_trainer(tmp_path, tiny_policy, tiny_image_tokenizer, dataset=bad_labels)
    with pytest.raises(ValueError, match=r"class_label 42 is outside the policy's class range \[0, 10\)"):
        trainer.train()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"per_device_train_batch_size": 3}, "multiple of num_generations"),
        ({"beta": 0.04}, "ce_coef"),
        ({"use_vllm": True}, "use_vllm=False"),
        ({"context_noise_prob": 1.5}, r"\[0, 1\]"),
        ({"learning_rate": None}, "explicit `learning_rate`"),
        ({"ce_coef": float("nan")}, "finite"),
        ({"pixel_weight": 0.0, "lpips_weight": 0.0}, "both 0"),
        ({"lpips_net": "squeeze"}, "vgg"),
        ({"chat_template_kwargs": {"x": 1}}, "chat_template_kwargs"),
    ],
)
def test_config_rejects_options_that_make_no_sense(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        make_args(tmp_path, **overrides)


def test_lpips_model_can_be_injected(tmp_path, tiny_policy, tiny_image_tokenizer):
    lpips_model = build_lpips("alex", random_backbone=True)
    trainer = VAPiTrainer(
        model=tiny_policy,
        args=make_args(tmp_path, max_steps=1),
        train_dataset=make_image_dataset(),
        image_tokenizer=tiny_image_tokenizer,
        lpips_model=lpips_model,
    )
    assert trainer.pixel_reward.lpips_model is lpips_model


def test_bf16_defaults_to_what_the_machine_supports(tmp_path):
    args = VAPiConfig(output_dir=str(tmp_path), learning_rate=1e-6, per_device_train_batch_size=8)
    expected = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    assert args.bf16 is expected  # TRL's default (bf16 whenever fp16 is off) would fail here on a CPU machine


def test_groups_of_undecodable_images_leave_numerator_and_denominator(tmp_path, tiny_policy, tiny_image_tokenizer):
    """A failed image's group changes nothing: the loss over [valid, failed] equals the loss over [valid] alone."""
    trainer = make_trainer(
        tmp_path, tiny_policy, tiny_image_tokenizer, num_generations=2, per_device_train_batch_size=4,
        loss_forward_mode="eval",
    )  # fmt: skip
    inputs = trainer._generate_and_score_completions([row for row in make_image_dataset(2) for _ in range(2)])
    inputs["advantages"] = torch.tensor([[1.0, -1.0], [3.0, -3.0]])
    inputs["valid"] = torch.tensor([True, False])
    alone = {key: value[:1] for key, value in inputs.items()}
    alone["valid"] = torch.tensor([True])
    torch.testing.assert_close(
        trainer._compute_loss(trainer.model, inputs), trainer._compute_loss(trainer.model, alone)
    )
    inputs["valid"] = torch.tensor([False, False])
    loss = trainer._compute_loss(trainer.model, inputs)
    assert loss.item() == 0.0 and loss.requires_grad


def test_label_dropout_reaches_the_loss_forward_only(tmp_path, tiny_policy, tiny_image_tokenizer):
    trainer = make_trainer(tmp_path, tiny_policy, tiny_image_tokenizer, label_dropout=1.0)
    rows = [row for row in make_image_dataset(2) for _ in range(2)]
    trainer.model.train()
    inputs = trainer._generate_and_score_completions(rows)
    assert inputs["condition.class_labels"].tolist() == [
        rows[0]["class_label"],
        rows[2]["class_label"],
    ]  # sampling: true labels
    seen = []
    handle = trainer.model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["class_labels"].clone()), with_kwargs=True
    )
    try:
        trainer._compute_loss(trainer.model, inputs)
        trainer.args.loss_forward_mode = "eval"
        trainer._compute_loss(trainer.model, inputs)
    finally:
        handle.remove()
        trainer.args.loss_forward_mode = "train"
    assert seen[0].tolist() == [tiny_policy.null_class_id] * 2  # train loss forward: dropped (p = 1)
    assert (
        seen[1].tolist() == inputs["condition.class_labels"].tolist()
    )  # eval loss forward: deterministic, never dropped
