"""The official train-mode loss forward, and why one forward per image still serves all G samples (issue 12).

The official launchers run the loss forward in train mode: each of the G copies of an image gets its own dropout mask
and its own label-dropout draw. VA-π runs ONE forward per image, so its G samples share one mask and one draw. Each
sample's loss term sees a mask with the same marginal distribution either way, so the expected gradient is the same:
the estimators differ only in variance. These tests average both over many seeds and compare within Monte-Carlo error.
"""

import pytest
import torch

from vapi_trl.dropout import dropout_disabled, eval_mode
from vapi_trl.models import LlamaGenForClassToImage

from .conftest import make_image_dataset, official_g_fold_loss, tiny_llamagen_config
from .test_trainer import make_trainer

NUM_SEEDS = 300
GROUP = 4


def flat_grad(model) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def gradient_samples(loss_fn, model, seeds) -> torch.Tensor:
    """`[len(seeds), P]` gradients of `loss_fn()`, one per seed of the dropout draws."""
    grads, threads = [], torch.get_num_threads()
    torch.set_num_threads(1)  # thousands of tiny kernels: threads only add overhead (6x slower on 2 busy cores)
    try:
        for seed in seeds:
            torch.manual_seed(seed)
            model.zero_grad()
            loss_fn().backward()
            grads.append(flat_grad(model).clone())
    finally:
        torch.set_num_threads(threads)
    return torch.stack(grads)


def mean_squared_z(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over coordinates of z² = (mean_a − mean_b)² / (var_a/n_a + var_b/n_b); ≈ 1 when the means agree."""
    var = a.var(0) / a.shape[0] + b.var(0) / b.shape[0]
    keep = var > 1e-20
    return ((a.mean(0) - b.mean(0))[keep] ** 2 / var[keep]).mean().item()


@pytest.fixture
def dropout_setup(tmp_path, tiny_image_tokenizer):
    torch.manual_seed(0)
    policy = LlamaGenForClassToImage(tiny_llamagen_config())
    config = policy.config  # the official values, from the config defaults
    assert (config.token_dropout_p, config.resid_dropout_p, config.ffn_dropout_p) == (0.1, 0.1, 0.1)
    assert (config.attn_dropout_p, config.class_dropout_prob) == (0.0, 0.1)
    trainer = make_trainer(
        tmp_path, policy, tiny_image_tokenizer, num_generations=GROUP, per_device_train_batch_size=2 * GROUP,
        loss_forward_mode="train", context_noise_prob=0.5,
    )  # fmt: skip
    trainer.model.train()
    torch.manual_seed(1)
    inputs = trainer._generate_and_score_completions([row for row in make_image_dataset(2) for _ in range(GROUP)])
    inputs["advantages"] = torch.randn_like(inputs["advantages"])  # non-trivial advantages of both signs
    return trainer, inputs


@pytest.mark.slow
def test_shared_mask_gradient_equals_official_independent_masks_in_expectation(dropout_setup):
    trainer, inputs = dropout_setup
    model = trainer.model
    ours = gradient_samples(lambda: trainer._compute_loss(model, inputs), model, range(NUM_SEEDS))
    official = gradient_samples(
        lambda: official_g_fold_loss(trainer, model, inputs), model, range(10**6, 10**6 + NUM_SEEDS)
    )
    with dropout_disabled(model):
        deterministic = gradient_samples(lambda: trainer._compute_loss(model, inputs), model, [0])[0]

    agreement = mean_squared_z(ours, official)
    relative_gap = ((ours.mean(0) - official.mean(0)).norm() / official.mean(0).norm()).item()
    # Power: the same statistic against the dropout-free gradient must be far from 1, or the test could not tell.
    power = mean_squared_z(ours, deterministic.expand(2, -1))
    print(f"mean z^2 ours vs official = {agreement:.3f}, relative gap {relative_gap:.4f}; vs no dropout = {power:.1f}")
    assert 0.7 < agreement < 1.4, agreement
    assert power > 3 * agreement, power
    # Shared masks: the G samples of an image see one forward, so their per-step variance is at least as large.
    assert ours.var(0).sum() > 0 and official.var(0).sum() > 0


def test_loss_forward_modes(dropout_setup):
    """'train' draws dropout (two loss passes differ); 'eval' is deterministic and equals the eval-mode forward."""
    trainer, inputs = dropout_setup
    model = trainer.model
    first, second = (trainer._compute_loss(model, inputs).item() for _ in range(2))
    assert first != second
    trainer.args.loss_forward_mode = "eval"
    try:
        first, second = (trainer._compute_loss(model, inputs).item() for _ in range(2))
        assert first == second
        assert model.training  # eval loss mode switches dropout off, not the module mode (gradient checkpointing)
    finally:
        trainer.args.loss_forward_mode = "train"


def test_dropout_lives_in_train_mode_only_and_labels_drop_to_null():
    torch.manual_seed(0)
    policy = LlamaGenForClassToImage(tiny_llamagen_config())
    labels, context = torch.arange(8) % 10, torch.randint(0, 64, (8, 15))
    with torch.no_grad():
        policy.eval()
        clean = policy(labels, context).logits
        assert torch.equal(policy(labels, context).logits, clean)
        policy.train()
        assert not torch.allclose(policy(labels, context).logits, clean)
        with eval_mode(policy):
            assert torch.equal(policy(labels, context).logits, clean)
        assert policy.training and all(module.training for module in policy.modules())
    # Condition dropout alone: rows are either the true class or the null class, one draw per row.
    config = tiny_llamagen_config()
    config.token_dropout_p = config.resid_dropout_p = config.ffn_dropout_p = 0.0
    only_labels = LlamaGenForClassToImage(config)
    only_labels.load_state_dict(policy.state_dict())
    only_labels.train()
    with torch.no_grad():
        null = policy.eval()(policy.uncond(labels), context).logits
        dropped = 0
        for seed in range(50):
            torch.manual_seed(seed)
            out = only_labels(labels, context).logits
            is_null = (out - null).flatten(1).abs().amax(1) < 1e-5
            is_clean = (out - clean).flatten(1).abs().amax(1) < 1e-5
            assert (is_null | is_clean).all()
            dropped += int(is_null.sum())
    assert 0.05 < dropped / 400 < 0.16  # class_dropout_prob = 0.1


def test_presets_conversion_and_saved_configs_keep_the_official_dropout(tmp_path):
    from vapi_trl.models import LlamaGenConfig
    from vapi_trl.models.llamagen.convert_llamagen_to_hf import llamagen_gpt_config

    official = {"token_dropout_p": 0.1, "attn_dropout_p": 0.0, "resid_dropout_p": 0.1, "ffn_dropout_p": 0.1,
                "class_dropout_prob": 0.1}  # fmt: skip
    for config in (LlamaGenConfig.from_preset("GPT-XXL", block_size=576), llamagen_gpt_config("GPT-XL", task="t2i")):
        assert {key: getattr(config, key) for key in official} == official
    custom = llamagen_gpt_config("GPT-B", image_size=256, resid_dropout_p=0.0, class_dropout_prob=0.0)
    custom.save_pretrained(tmp_path)
    reloaded = LlamaGenConfig.from_pretrained(tmp_path)
    assert (reloaded.resid_dropout_p, reloaded.class_dropout_prob, reloaded.ffn_dropout_p) == (0.0, 0.0, 0.1)
    with pytest.raises(ValueError, match="token_dropout_p"):
        LlamaGenConfig(token_dropout_p=1.0)
    # The attention-probability dropout reaches the Llama backbone.
    assert LlamaGenConfig(attn_dropout_p=0.2).to_llama_config().attention_dropout == 0.2
