"""VAR (next-scale prediction) as a VA-π policy: tokenizer, teacher forcing vs VAR's sampler, CFG ramp, conversion,
save/load and a few VAPiTrainer steps, on a tiny model (4 scales (1, 2, 3, 4), L = 30, 8-px images)."""

import importlib.util
import itertools
import os

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoProcessor

from vapi_trl import cli
from vapi_trl.models import VARVQVAE, VARConfig, VARForClassToImage, VARImageTokenizerProcessor, VARVQVAEConfig
from vapi_trl.models.var import block_causal_mask, cfg_ramp, scale_levels
from vapi_trl.models.var.convert_var_to_hf import (
    convert_var_checkpoints,
    convert_var_state_dict,
    export_official_state_dict,
    infer_var_config,
)
from vapi_trl.objective import corrupt_context

from .conftest import assert_argmax_agrees, assert_close_scaled, make_image_dataset

pytestmark = pytest.mark.numerics

PATCH_NUMS = (1, 2, 3, 4)
NUM_TOKENS = 30
CODEBOOK = 64
ROOT = os.path.join(os.path.dirname(__file__), "..")


def tiny_vq_config(**overrides) -> VARVQVAEConfig:
    # ch_mult (1, 2): one downsampling, so the last 4x4 scale is an 8x8 image. Widths are multiples of 32 (GroupNorm).
    values = {"vocab_size": CODEBOOK, "z_channels": 8, "ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1,
              "patch_nums": PATCH_NUMS, "initializer_range": 0.2}  # fmt: skip
    values.update(overrides)
    return VARVQVAEConfig(**values)


def tiny_var_config(**overrides) -> VARConfig:
    values = {"vocab_size": CODEBOOK, "vae_embed_dim": 8, "hidden_size": 32, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_classes": 10, "patch_nums": PATCH_NUMS,
              "initializer_range": 0.1}  # fmt: skip
    values.update(overrides)
    return VARConfig(**values)


def make_tokenizer(seed: int = 0, **overrides) -> VARImageTokenizerProcessor:
    torch.manual_seed(seed)
    return VARImageTokenizerProcessor.from_vq_config(tiny_vq_config(**overrides))


def make_policy(tokenizer: VARImageTokenizerProcessor, seed: int = 0, **overrides) -> VARForClassToImage:
    """A random tiny policy whose frozen quantizer copy equals `tokenizer`'s (as the converter builds it)."""
    torch.manual_seed(seed)
    policy = VARForClassToImage(tiny_var_config(**overrides)).eval()
    quantizer = {k: v for k, v in tokenizer.vq_model.quantize.state_dict().items() if k != "ema_vocab_hit_SV"}
    policy.quantize.load_state_dict(quantizer)
    return policy


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="module")
def policy(tokenizer):
    return make_policy(tokenizer)


def random_ids(batch: int = 3, seed: int = 0) -> torch.LongTensor:
    return torch.randint(0, CODEBOOK, (batch, NUM_TOKENS), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------------------------------


def test_tokenizer_sizes_and_round_trip_shapes(tokenizer):
    assert (tokenizer.image_size, tokenizer.num_image_tokens, tokenizer.codebook_size) == (8, NUM_TOKENS, CODEBOOK)
    pixels = tokenizer.preprocess(make_image_dataset(num_images=3, size=12)["image"])
    assert pixels.shape == (3, 3, 8, 8) and pixels.min() >= -1 and pixels.max() <= 1
    ids = tokenizer.encode(pixels)
    assert ids.shape == (3, NUM_TOKENS) and ids.dtype == torch.long and 0 <= ids.min() and ids.max() < CODEBOOK
    decoded = tokenizer.decode(ids)
    assert decoded.shape == (3, 3, 8, 8) and decoded.dtype == torch.float32
    assert decoded.abs().max() > 1, "the tiny random decoder overshoots [-1, 1]: decode must not clamp"
    tokenizer.decode_chunk_size = 1
    try:
        assert_close_scaled(tokenizer.decode(ids), decoded)  # batch-size-dependent conv rounding
    finally:
        tokenizer.decode_chunk_size = 32
    tokenizer.check_compatible(CODEBOOK, NUM_TOKENS)
    with pytest.raises(ValueError, match="680"):
        tokenizer.check_compatible(CODEBOOK, 680)
    with pytest.raises(ValueError, match="shape"):
        tokenizer.decode(ids[:, :-1])


def test_encode_is_euclidean_residual_quantization(tokenizer):
    """Reference: nearest code by torch.cdist on the area-downsampled residual, residual updated through Phi."""
    vq = tokenizer.vq_model
    pixels = torch.rand(2, 3, 8, 8) * 2 - 1
    latent = vq.quant_conv(vq.encoder(pixels))
    rest, codebook, expected = latent.clone(), vq.quantize.embedding.weight, []
    for index, pn in enumerate(PATCH_NUMS):
        z = F.interpolate(rest, size=(pn, pn), mode="area") if pn != 4 else rest
        idx = torch.cdist(z.permute(0, 2, 3, 1).reshape(-1, 8), codebook).argmin(dim=1).view(2, pn * pn)
        h = codebook[idx].transpose(1, 2).reshape(2, 8, pn, pn)
        h = F.interpolate(h, size=(4, 4), mode="bicubic") if pn != 4 else h
        rest = rest - vq.quantize.phi(index)(h)
        expected.append(idx)
    assert torch.equal(tokenizer.encode(pixels), torch.cat(expected, dim=1))


def test_phi_selection_follows_official_ticks():
    # share_quant_resi=4 over 10 scales: ticks linspace(1/12, 11/12, 4); scale k takes the tick nearest to k/9.
    quantizer = VARVQVAE(tiny_vq_config(patch_nums=(1, 2, 3, 4, 5, 6, 8, 10, 13, 16), ch_mult=[1])).quantize
    chosen = [list(quantizer.quant_resi.qresi_ls).index(quantizer.phi(k)) for k in range(10)]
    assert chosen == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]


def test_processor_save_load_offline(tmp_path, tokenizer):
    tokenizer.save_pretrained(tmp_path)
    assert (tmp_path / "vq_model" / "model.safetensors").is_file()
    for loaded in (VARImageTokenizerProcessor.from_pretrained(tmp_path), AutoProcessor.from_pretrained(tmp_path)):
        assert type(loaded) is VARImageTokenizerProcessor and loaded.patch_nums == list(PATCH_NUMS)
        for name, tensor in tokenizer.vq_model.state_dict().items():
            assert torch.equal(tensor, loaded.vq_model.state_dict()[name])
    bare = VARImageTokenizerProcessor.from_pretrained(tmp_path, load_vq_model=False)
    assert bare.vq_model is None and bare.num_image_tokens == NUM_TOKENS


# ---------------------------------------------------------------------------------------------------------------------
# Policy: teacher forcing = VAR's sampler
# ---------------------------------------------------------------------------------------------------------------------


def test_forward_shapes_and_frozen_quantizer(policy):
    logits = policy(torch.tensor([0, 4, 9]), random_ids()[:, :-1]).logits
    assert logits.shape == (3, NUM_TOKENS, CODEBOOK) and logits.dtype == torch.float32
    assert policy.codebook_size == CODEBOOK and policy.num_image_tokens == NUM_TOKENS
    names = {name for name, _ in policy.named_parameters()}
    assert not any(name.startswith("quantize.") for name in names), "the quantizer copy must not be trainable"
    assert "quantize.embedding.weight" in policy.state_dict()
    with pytest.raises(ValueError, match="num_image_tokens - 1"):
        policy(torch.tensor([0]), random_ids(1)[:, :-2])


@pytest.mark.parametrize("cfg_scale", [1.0, 2.5])
def test_teacher_forced_logits_equal_scale_by_scale_sampler(policy, cfg_scale):
    labels, ids = torch.tensor([1, 3, 7]), random_ids()
    teacher_forced = policy(labels, ids[:, :-1], cfg_scale=cfg_scale).logits
    sampler = policy.stepwise_logits(labels, ids, cfg_scale=cfg_scale)
    assert_close_scaled(teacher_forced, sampler)


def test_greedy_sampling_reproduces_teacher_forced_argmax(policy):
    labels = torch.tensor([2, 5, 5])
    for cfg_scale in (1.0, 3.0):
        ids = policy.sample(labels, cfg_scale=cfg_scale, greedy=True)
        assert ids.shape == (3, NUM_TOKENS)
        logits = policy(labels, ids[:, :-1], cfg_scale=cfg_scale).logits
        assert_argmax_agrees(logits, ids)


def test_sampling_is_seeded_and_filters_apply(policy):
    labels = torch.tensor([1, 2])
    first = policy.sample(labels, cfg_scale=2.5, top_k=3, top_p=0.96, generator=torch.Generator().manual_seed(0))
    again = policy.sample(labels, cfg_scale=2.5, top_k=3, top_p=0.96, generator=torch.Generator().manual_seed(0))
    assert torch.equal(first, again)
    logits = policy(labels, first[:, :-1], cfg_scale=2.5).logits
    top3 = logits.topk(3, dim=-1).indices
    assert (top3 == first.unsqueeze(-1)).any(-1).all(), "a drawn id lies outside the top-k of its guided logits"


def test_cfg_follows_vars_linear_ramp_over_scales(policy):
    labels, context = torch.tensor([4, 8]), random_ids(2)[:, :-1]
    cond = policy(labels, context).logits
    uncond = policy(policy.uncond(labels), context).logits
    guided = policy(labels, context, cfg_scale=2.5).logits
    levels = scale_levels(list(PATCH_NUMS))
    # VAR: t = cfg · si / (S − 1), logits = (1 + t)·c − t·u with cfg = cfg_scale − 1 = 1.5.
    for position, scale in enumerate(levels.tolist()):
        t = 1.5 * scale / (len(PATCH_NUMS) - 1)
        assert_close_scaled(guided[:, position], (1 + t) * cond[:, position] - t * uncond[:, position])
    assert cfg_ramp(2.5, 4) == [0.0, 0.5, 1.0, 1.5] and cfg_ramp(1.0, 4) == [0.0] * 4
    # the first scale is never guided (the 2B CFG batch rounds differently: compare to the magnitude)
    assert_close_scaled(guided[:, 0], cond[:, 0], rel=1e-5)


def test_logits_of_a_scale_depend_only_on_earlier_scales(policy):
    """Corrupting flat ids = corrupting each scale's map: scale k's logits move only with the ids of scales < k."""
    labels, ids = torch.tensor([3]), random_ids(1)
    base = policy(labels, ids[:, :-1]).logits
    starts = [0, 1, 5, 14, 30]
    for scale in range(len(PATCH_NUMS)):
        changed = ids.clone()
        changed[:, starts[scale] : starts[scale + 1]] = (changed[:, starts[scale] : starts[scale + 1]] + 1) % CODEBOOK
        logits = policy(labels, changed[:, :-1]).logits
        assert_close_scaled(logits[:, : starts[scale + 1]], base[:, : starts[scale + 1]], msg=f"scale {scale} leaks")
        if scale < len(PATCH_NUMS) - 1:
            assert not torch.allclose(logits[:, starts[scale + 1] :], base[:, starts[scale + 1] :])
    # The trainer's flat corruption of the first L − 1 ids is the per-scale corruption of the maps the input reads.
    context = corrupt_context(ids.repeat(4, 1), 0.5, CODEBOOK, generator=torch.Generator().manual_seed(1))
    per_scale = [context[:, a:b] for a, b in itertools.pairwise(starts[:-1])]
    assert torch.equal(policy.build_var_input(context), policy.quantize.idxBl_to_var_input(torch.cat(per_scale, 1)))


def test_block_causal_mask_matches_official_buffer():
    mask = block_causal_mask([1, 2])
    expected = torch.tensor([[1, 0, 0, 0, 0]] + [[1, 1, 1, 1, 1]] * 4, dtype=torch.bool)
    assert torch.equal(mask, expected)


# ---------------------------------------------------------------------------------------------------------------------
# Conversion, save/load
# ---------------------------------------------------------------------------------------------------------------------

# Per-block names of the official `var_d16.pth` (shared/reference/official-checkpoint-keys.tsv), attn_l2_norm off.
OFFICIAL_BLOCK_KEYS = {
    "attn.q_bias", "attn.v_bias", "attn.zero_k_bias", "attn.mat_qkv.weight", "attn.proj.weight", "attn.proj.bias",
    "ffn.fc1.weight", "ffn.fc1.bias", "ffn.fc2.weight", "ffn.fc2.bias", "ada_lin.1.weight", "ada_lin.1.bias",
}  # fmt: skip
OFFICIAL_TOP_KEYS = {
    "pos_start", "pos_1LC", "lvl_1L", "attn_bias_for_masking", "word_embed.weight", "word_embed.bias",
    "class_emb.weight", "lvl_embed.weight", "head_nm.ada_lin.1.weight", "head_nm.ada_lin.1.bias", "head.weight",
    "head.bias",
}  # fmt: skip


@pytest.mark.parametrize("attn_l2_norm", [False, True])
def test_convert_official_files_round_trip(tmp_path, tokenizer, attn_l2_norm):
    policy = make_policy(tokenizer, seed=1, attn_l2_norm=attn_l2_norm)
    official = export_official_state_dict(policy)
    expected_keys = OFFICIAL_TOP_KEYS | {f"blocks.{i}.{key}" for i in range(2) for key in OFFICIAL_BLOCK_KEYS}
    if attn_l2_norm:
        expected_keys |= {f"blocks.{i}.attn.scale_mul_1H11" for i in range(2)}
    assert set(official) == expected_keys
    assert official["lvl_1L"].dtype == torch.int64 and official["attn_bias_for_masking"].shape == (1, 1, 30, 30)
    torch.save(official, tmp_path / "var_tiny.pth")
    torch.save({k: v.clone() for k, v in tokenizer.vq_model.state_dict().items()}, tmp_path / "vae_tiny.pth")

    written = convert_var_checkpoints(
        tmp_path / "out", var_ckpt=tmp_path / "var_tiny.pth", vae_ckpt=tmp_path / "vae_tiny.pth",
        num_attention_heads=4,
    )  # fmt: skip
    converted = VARForClassToImage.from_pretrained(written["policy"])
    assert converted.config.attn_l2_norm is attn_l2_norm and converted.config.patch_nums == list(PATCH_NUMS)
    labels, ids = torch.tensor([1, 6]), random_ids(2)
    assert_close_scaled(converted(labels, ids[:, :-1]).logits, policy(labels, ids[:, :-1]).logits)
    reloaded_tokenizer = AutoProcessor.from_pretrained(written["image_tokenizer"])
    pixels = torch.rand(2, 3, 8, 8) * 2 - 1
    assert torch.equal(reloaded_tokenizer.encode(pixels), tokenizer.encode(pixels))


def test_conversion_is_strict(tokenizer):
    policy = make_policy(tokenizer)
    official = export_official_state_dict(policy)
    vae = tokenizer.vq_model.state_dict()
    config = infer_var_config(official, num_attention_heads=4)
    with pytest.raises(ValueError, match="Missing keys"):
        convert_var_state_dict({k: v for k, v in official.items() if k != "head.bias"}, vae, config)
    with pytest.raises(ValueError, match="Unexpected keys"):
        convert_var_state_dict({**official, "blocks.0.extra": torch.zeros(1)}, vae, config)
    with pytest.raises(ValueError, match="lvl_1L"):
        convert_var_state_dict(official, vae, tiny_var_config(patch_nums=(1, 2, 5)))
    bad_bias = {**official, "blocks.1.attn.zero_k_bias": torch.ones(32)}
    with pytest.raises(ValueError, match="zero_k_bias"):
        convert_var_state_dict(bad_bias, vae, config)


def test_policy_save_load_strict_and_auto(tmp_path, policy):
    policy.save_pretrained(tmp_path / "policy")
    labels, ids = torch.tensor([0, 9]), random_ids(2)
    for loaded in (
        VARForClassToImage.from_pretrained(tmp_path / "policy"),
        AutoModel.from_pretrained(tmp_path / "policy"),
    ):
        assert type(loaded) is VARForClassToImage
        assert torch.equal(loaded(labels, ids[:, :-1]).logits, policy(labels, ids[:, :-1]).logits)
        assert not any(name.startswith("quantize.") for name, _ in loaded.named_parameters())
    with pytest.raises(ValueError, match=r"Missing keys \(\d+\): blocks\.2\."):
        VARForClassToImage.from_pretrained(tmp_path / "policy", config=tiny_var_config(num_hidden_layers=3))


def test_convert_var_cli_help_and_run(tmp_path, capsys, tokenizer):
    with pytest.raises(SystemExit) as info:
        cli.main(["convert-var", "--help"])
    assert info.value.code == 0 and "usage: vapi-trl" in capsys.readouterr().out
    torch.save(tokenizer.vq_model.state_dict(), tmp_path / "vae.pth")
    assert cli.main(["convert-var", "--vae-ckpt", str(tmp_path / "vae.pth"), "--patch-nums", "1", "2", "3", "4",
                     "--output_dir", str(tmp_path / "out")]) == 0  # fmt: skip
    assert (tmp_path / "out" / "image_tokenizer" / "vq_model" / "model.safetensors").is_file()


def test_example_script_parses_recipe():
    spec = importlib.util.spec_from_file_location("train_var_c2i", os.path.join(ROOT, "examples", "train_var_c2i.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    script_args, args, model_args = module.make_parser().parse_args_and_config(
        ["--learning_rate", "1e-6", "--image_tokenizer_path", "t", "--bf16", "False"]
    )
    assert (args.num_generations, args.ce_coef, args.cfg_scale, args.output_dir) == (8, 0.1, 1.0, "var-c2i-va-pi")
    assert model_args.lora_task_type is None and script_args.image_tokenizer_path == "t"


# ---------------------------------------------------------------------------------------------------------------------
# VA-π training
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_vapi_trainer_updates_var_policy_only(tmp_path):
    from vapi_trl import VAPiConfig, VAPiTrainer

    tokenizer = make_tokenizer(ch_mult=[1, 1, 2, 2])  # 32-px images: LPIPS-Alex needs more than 8 px
    policy = make_policy(tokenizer)
    args = VAPiConfig(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, num_generations=2, max_steps=2,
        learning_rate=1e-2,  # tiny random weights: the recipe's 1e-6 would not visibly move them
        context_noise_prob=0.5, bf16=False, report_to="none", save_strategy="no", lpips_net="alex",
        lpips_random_backbone=True, seed=0, dataloader_num_workers=0,
    )  # fmt: skip
    torch.manual_seed(0)
    trainer = VAPiTrainer(model=policy, args=args, train_dataset=make_image_dataset(), image_tokenizer=tokenizer)
    trainable = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    frozen_quantizer = {k: v.clone() for k, v in policy.quantize.state_dict().items()}
    vq_before = {k: v.clone() for k, v in tokenizer.vq_model.state_dict().items()}

    trainer.train()

    assert trainer.state.global_step == 2
    for name, before in trainable.items():
        assert not torch.equal(before, trainer.model.get_parameter(name)), f"{name} did not change"
    for name, tensor in policy.quantize.state_dict().items():
        assert torch.equal(tensor, frozen_quantizer[name]), f"policy quantizer tensor {name} changed"
    for name, tensor in tokenizer.vq_model.state_dict().items():
        assert torch.equal(tensor, vq_before[name]), f"VQ tensor {name} changed"
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimised == {id(p) for p in trainer.model.parameters()}
    assert "token_accuracy" in trainer.state.log_history[0]


@pytest.mark.slow
def test_var_tokenizes_and_samples_with_the_llamagen_commands(tmp_path, tokenizer, policy):
    """`vapi-trl tokenize` and `vapi-trl sample` load any class-conditional family through the Auto classes."""
    import numpy as np
    from datasets import load_from_disk

    tokenizer.save_pretrained(tmp_path / "image_tokenizer")
    policy.save_pretrained(tmp_path / "policy")
    make_image_dataset(num_images=4).save_to_disk(str(tmp_path / "data"))

    assert cli.main(["tokenize", "--image_tokenizer_path", str(tmp_path / "image_tokenizer"), "--dataset",
                     str(tmp_path / "data"), "--output_dir", str(tmp_path / "tokens"), "--device", "cpu"]) == 0  # fmt: skip
    tokens = load_from_disk(str(tmp_path / "tokens"))
    pixels = tokenizer.preprocess([row["image"] for row in make_image_dataset(num_images=4)])
    assert torch.equal(torch.tensor(tokens["gt_ids"]), tokenizer.encode(pixels))

    assert cli.main(["sample", "--model_name_or_path", str(tmp_path / "policy"), "--image_tokenizer_path",
                     str(tmp_path / "image_tokenizer"), "--output_dir", str(tmp_path / "samples"), "--num_samples",
                     "4", "--batch_size", "2", "--resize", "0", "--device", "cpu"]) == 0  # fmt: skip
    images = np.load(tmp_path / "samples" / "samples.npz")["arr_0"]
    assert images.shape == (4, tokenizer.image_size, tokenizer.image_size, 3) and images.dtype == np.uint8
