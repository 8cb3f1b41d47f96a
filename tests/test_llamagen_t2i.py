"""LlamaGen text-to-image: T5 caption encoder, official T2I conversion, TF vs KV-cache decoding, VAPiTrainer steps."""

import argparse

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import (
    assert_argmax_agrees,
    assert_close_scaled,
    TINY_T2I_SLOTS,
    TINY_T5_DIM,
    make_caption_dataset,
    make_tiny_caption_encoder,
    make_tiny_llamagen_t2i,
    tiny_vq_config,
)
from tests.test_llamagen_convert import (
    DIM,
    FFN,
    GPT_OVERRIDES,
    GRID,
    N_HEAD,
    N_KV_HEAD,
    N_LAYER,
    VOCAB,
    official_decoder,
    official_gpt_state_dict,
)
from vapi_trl.models import LlamaGenForTextToImage, LlamaGenProcessor, T5CaptionEncoder
from vapi_trl.models.llamagen.convert_llamagen_to_hf import convert_llamagen_checkpoints
from vapi_trl.models.llamagen.text_encoder import pad_caption_features, right_align_captions

pytestmark = pytest.mark.numerics


T5_DIM = TINY_T5_DIM
SLOTS = TINY_T2I_SLOTS


def official_t2i_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """The tiny official GPT with the T2I conditioning keys (`CaptionEmbedder`: bias-free MLP + uncond buffer)."""
    sd = official_gpt_state_dict(seed)
    del sd["cls_embedding.embedding_table.weight"]
    gen = torch.Generator().manual_seed(seed + 100)
    sd["cls_embedding.cap_proj.fc1.weight"] = torch.randn(DIM, T5_DIM, generator=gen) * 0.3
    sd["cls_embedding.cap_proj.fc2.weight"] = torch.randn(DIM, DIM, generator=gen) * 0.3
    sd["cls_embedding.uncond_embedding"] = torch.randn(SLOTS, T5_DIM, generator=gen) / T5_DIM**0.5
    return sd


def official_t2i_forward(
    sd: dict[str, torch.Tensor], caption: torch.Tensor, emb_mask: torch.Tensor, context: torch.Tensor
) -> torch.Tensor:
    """Official `Transformer.forward` (t2i, dropouts off) with the training/`generate` mask: `tril`, padded caption
    columns zeroed, diagonal set. Returns logits `[B, N, V]` read from position `cls_token_num - 1`."""
    fc1, fc2 = sd["cls_embedding.cap_proj.fc1.weight"], sd["cls_embedding.cap_proj.fc2.weight"]
    cond = F.gelu(caption @ fc1.T, approximate="tanh") @ fc2.T
    h = torch.cat([cond, sd["tok_embeddings.weight"][context]], 1)
    bsz, seqlen, _ = h.shape
    mask = torch.tril(torch.ones(seqlen, seqlen)).repeat(bsz, 1, 1)
    mask[:, :, :SLOTS] = mask[:, :, :SLOTS] * emb_mask[:, None, :]
    eye = torch.eye(seqlen)
    mask = (mask * (1 - eye) + eye).bool()[:, None]
    return official_decoder(sd, h, cls_token_num=SLOTS, attn_mask=mask)


def random_captions(batch_size: int = 3, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-aligned random caption features `[B, SLOTS, T5_DIM]` (zeros on padding) with 3, 8 and 1 valid slots."""
    gen = torch.Generator().manual_seed(seed)
    lengths = [3, SLOTS, 1][:batch_size]
    features = [torch.randn(length, T5_DIM, generator=gen) for length in lengths]
    return pad_caption_features(features, slots=SLOTS)


# ---------------------------------------------------------------- text encoder


def test_caption_encoder_right_aligns_like_official_left_padding(tmp_path):
    encoder = make_tiny_caption_encoder()
    captions = ["a red cat", "The big blue dog on a table", "two"]
    out = encoder(captions)
    embeds, mask = out["caption_embeds"], out["caption_mask"]
    assert embeds.shape == (3, SLOTS, T5_DIM) and embeds.dtype == torch.float32
    # valid = words + EOS, moved to the last slots (official `cat(emb[n:], emb[:n])`, `flip(mask)`, `emb * mask`)
    assert mask.tolist() == [[0, 0, 0, 0, 1, 1, 1, 1], [1] * 8, [0, 0, 0, 0, 0, 0, 1, 1]]
    assert torch.all(embeds[mask == 0] == 0)
    tokens = encoder.tokenize(captions)
    hidden = encoder.text_encoder(**tokens).last_hidden_state
    valid = int(tokens["attention_mask"][1].sum())
    official = torch.cat([hidden[1, valid:], hidden[1, :valid]]) * mask[1, :, None]
    torch.testing.assert_close(embeds[1], official)
    # lowercased by the official cleaning: "The" is a known word
    assert tokens["input_ids"][1, 0].item() == encoder.tokenizer.convert_tokens_to_ids("the")

    encoder.save_pretrained(tmp_path / "enc")  # no reload path recorded: the weights are written
    assert (tmp_path / "enc" / "text_encoder" / "model.safetensors").is_file()
    reloaded = T5CaptionEncoder.from_pretrained(tmp_path / "enc")
    assert reloaded.max_length == SLOTS and reloaded.text_preprocessing == "clean"
    torch.testing.assert_close(reloaded(captions)["caption_embeds"], embeds, atol=0, rtol=0)

    # With a reload path, checkpoints only reference the (3B) encoder.
    encoder.text_encoder.save_pretrained(tmp_path / "t5")
    encoder.tokenizer.save_pretrained(tmp_path / "t5")
    from_t5 = T5CaptionEncoder.from_text_encoder_pretrained(tmp_path / "t5", max_length=SLOTS, dtype=torch.float32)
    from_t5.save_pretrained(tmp_path / "ref")
    assert not (tmp_path / "ref" / "text_encoder").exists()
    torch.testing.assert_close(T5CaptionEncoder.from_pretrained(tmp_path / "ref")(captions)["caption_embeds"], embeds)


def test_right_align_and_padding_helpers():
    embeds = torch.arange(2 * 4 * 1, dtype=torch.float32).view(2, 4, 1) + 1
    aligned, mask = right_align_captions(embeds, torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]]))
    assert aligned[..., 0].tolist() == [[0, 0, 1, 2], [5, 6, 7, 8]] and mask.tolist() == [[0, 0, 1, 1], [1] * 4]
    with pytest.raises(ValueError, match="right-padded"):
        right_align_captions(embeds, torch.tensor([[0, 1, 1, 0], [1, 1, 1, 1]]))
    padded, mask = pad_caption_features([torch.ones(2, 3), [[2.0] * 3]], slots=4)
    assert mask.tolist() == [[0, 0, 1, 1], [0, 0, 0, 1]] and padded[1, 3].tolist() == [2.0] * 3
    with pytest.raises(ValueError, match="1 to 4 tokens"):
        pad_caption_features([torch.ones(5, 3)], slots=4)


# ---------------------------------------------------------------- conversion and forward


@pytest.mark.parametrize("task", [None, "t2i"])
def test_t2i_conversion_matches_official_forward(tmp_path, task):
    sd = official_t2i_state_dict()
    torch.save({"model": sd, "args": argparse.Namespace(gpt_model="GPT-tiny")}, tmp_path / "t2i.pt")
    written = convert_llamagen_checkpoints(
        tmp_path / "out", gpt_ckpt=tmp_path / "t2i.pt", image_size=GRID * 16, gpt_overrides=GPT_OVERRIDES, task=task
    )
    model = LlamaGenForTextToImage.from_pretrained(written["policy"]).eval()  # strict
    config = model.config
    assert (config.task, config.cls_token_num, config.caption_dim) == ("t2i", SLOTS, T5_DIM)
    torch.testing.assert_close(model.uncond_embedding, sd["cls_embedding.uncond_embedding"], atol=0, rtol=0)

    caption, mask = random_captions()
    context = torch.randint(0, VOCAB, (3, GRID * GRID - 1), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours = model(caption_embeds=caption, caption_mask=mask, context_ids=context).logits
    reference = official_t2i_forward(sd, caption, mask, context)
    assert ours.shape == reference.shape == (3, GRID * GRID, VOCAB)
    assert_close_scaled(ours, reference)
    # eager attention (additive mask) gives the same logits
    model.set_attn_implementation("eager")
    with torch.no_grad():
        eager = model(caption_embeds=caption, caption_mask=mask, context_ids=context).logits
    assert_close_scaled(eager, reference)


def test_t2i_task_mismatch_and_strict_errors(tmp_path):
    sd = official_t2i_state_dict()
    torch.save(sd, tmp_path / "t2i.pt")
    with pytest.raises(ValueError, match="text-to-image checkpoint"):
        convert_llamagen_checkpoints(tmp_path / "o", gpt_ckpt=tmp_path / "t2i.pt", image_size=64,
                                     gpt_overrides=GPT_OVERRIDES, task="c2i")  # fmt: skip
    torch.save(official_gpt_state_dict(), tmp_path / "c2i.pt")
    with pytest.raises(ValueError, match="no caption conditioning"):
        convert_llamagen_checkpoints(tmp_path / "o", gpt_ckpt=tmp_path / "c2i.pt", image_size=64,
                                     gpt_overrides=GPT_OVERRIDES, task="t2i")  # fmt: skip
    del sd["cls_embedding.cap_proj.fc2.weight"]
    torch.save(sd, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"(?s)Missing keys \(1\): caption_proj\.fc2\.weight.*caption slots"):
        convert_llamagen_checkpoints(tmp_path / "o", gpt_ckpt=tmp_path / "bad.pt", image_size=64,
                                     gpt_overrides=GPT_OVERRIDES)  # fmt: skip


def test_convert_command_t2i(tmp_path):
    from vapi_trl.cli import main

    torch.save({"model": official_t2i_state_dict()}, tmp_path / "t2i.pt")
    argv = ["convert-llamagen", "--gpt-ckpt", str(tmp_path / "t2i.pt"), "--output_dir", str(tmp_path / "o"),
            "--image-size", "64", "--dim", str(DIM), "--n-layer", str(N_LAYER), "--n-head", str(N_HEAD),
            "--n-kv-head", str(N_KV_HEAD), "--intermediate-size", str(FFN), "--vocab-size", str(VOCAB)]  # fmt: skip
    assert main(argv) == 0
    model = LlamaGenForTextToImage.from_pretrained(tmp_path / "o" / "policy")
    assert model.config.task == "t2i" and model.num_caption_slots == SLOTS


@pytest.mark.parametrize("cfg_scale", [1.0, 3.0])
def test_teacher_forcing_equals_kv_cache_decoding(cfg_scale):
    model = make_tiny_llamagen_t2i().eval()
    caption, mask = random_captions()
    ids = torch.randint(0, model.codebook_size, (3, model.num_image_tokens - 1))
    with torch.no_grad():
        teacher_forced = model(caption_embeds=caption, caption_mask=mask, context_ids=ids, cfg_scale=cfg_scale).logits
    stepwise = model.stepwise_logits(caption, mask, ids, cfg_scale=cfg_scale)
    assert_close_scaled(stepwise, teacher_forced)
    # The padded slots are invisible: changing their features changes nothing.
    noisy = caption + (1 - mask)[:, :, None] * torch.randn_like(caption)
    with torch.no_grad():
        again = model(caption_embeds=noisy, caption_mask=mask, context_ids=ids, cfg_scale=cfg_scale).logits
    assert_close_scaled(again, teacher_forced)
    # Greedy sampling reproduces the teacher-forced argmax chain.
    greedy = model.sample(caption, mask, cfg_scale=cfg_scale, greedy=True)
    with torch.no_grad():
        replay = model(caption_embeds=caption, caption_mask=mask, context_ids=greedy[:, :-1], cfg_scale=cfg_scale)
    assert_argmax_agrees(replay.logits, greedy)


def test_cfg_uses_uncond_embedding_and_drop_condition():
    model = make_tiny_llamagen_t2i().eval()
    caption, mask = random_captions()
    ids = torch.randint(0, model.codebook_size, (3, model.num_image_tokens - 1))
    with torch.no_grad():
        cond = model(caption, mask, ids).logits
        null = model.drop_condition({"caption_embeds": caption, "caption_mask": mask}, torch.ones(3, dtype=torch.bool))
        uncond = model(**null, context_ids=ids).logits
        guided = model(caption, mask, ids, cfg_scale=4.0).logits
    assert torch.equal(null["caption_embeds"][0], model.uncond_embedding) and torch.equal(null["caption_mask"], mask)
    assert_close_scaled(guided, uncond + 4.0 * (cond - uncond))


def test_processor_condition_from_encoder_and_cached_features():
    model = make_tiny_llamagen_t2i()
    encoder = make_tiny_caption_encoder()
    rows = [{"prompt": "a red cat"}, {"prompt": "a photo of an apple"}]
    processor = LlamaGenProcessor.from_policy(model, text_processor=encoder)
    condition = processor.prepare_condition(rows)
    assert condition["caption_embeds"].shape == (2, SLOTS, T5_DIM)
    assert condition["caption_mask"].sum(1).tolist() == [4, 6]
    # compact cached rows (valid tokens only), as `encode-captions` writes them
    cached = [{"prompt": row["prompt"], "caption_embeds": e[m.bool()].tolist()} for row, e, m in
              zip(rows, condition["caption_embeds"], condition["caption_mask"])]  # fmt: skip
    from_cache = LlamaGenProcessor.from_policy(model).prepare_condition(cached)
    torch.testing.assert_close(from_cache["caption_embeds"], condition["caption_embeds"])
    assert torch.equal(from_cache["caption_mask"], condition["caption_mask"])
    with pytest.raises(ValueError, match="T5CaptionEncoder"):
        LlamaGenProcessor.from_policy(model).prepare_condition(rows)
    with pytest.raises(ValueError, match="max_length=8"):
        LlamaGenProcessor.from_policy(model, text_processor=make_tiny_caption_encoder(max_length=6))
    with pytest.raises(ValueError, match="cls_token_num, caption_dim"):
        model(torch.zeros(1, SLOTS, T5_DIM + 1), torch.ones(1, SLOTS, dtype=torch.long))


def test_save_load_round_trip_keeps_uncond_buffer(tmp_path):
    model = make_tiny_llamagen_t2i()
    assert "uncond_embedding" in model.state_dict() and "uncond_embedding" not in dict(model.named_parameters())
    model.save_pretrained(tmp_path)
    reloaded = LlamaGenForTextToImage.from_pretrained(tmp_path)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, reloaded.state_dict()[name]), name


# ---------------------------------------------------------------- training


@pytest.mark.slow
@pytest.mark.parametrize("cached", [False, True])
def test_trainer_steps_update_policy_only(tmp_path, cached):
    from vapi_trl import VAPiConfig, VAPiTrainer
    from vapi_trl.commands.encode_captions import add_caption_embeds
    from vapi_trl.models import ImageTokenizerProcessor

    torch.manual_seed(0)
    model = make_tiny_llamagen_t2i()
    encoder = make_tiny_caption_encoder()
    image_tokenizer = ImageTokenizerProcessor.from_vq_config(tiny_vq_config(), image_size=32)
    dataset = make_caption_dataset(num_images=4, size=40)
    if cached:
        dataset = add_caption_embeds(dataset, encoder, batch_size=2)
    args = VAPiConfig(
        output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, num_generations=2,
        learning_rate=0.1,  # tiny random weights: 1e-6 would leave them bit-identical
        bf16=False, report_to="none", lpips_weight=0.0, context_noise_prob=0.5, logging_steps=1, save_strategy="no",
    )  # fmt: skip
    trainer = VAPiTrainer(
        model=model, args=args, train_dataset=dataset, image_tokenizer=image_tokenizer,
        processing_class=None if cached else encoder,
    )  # fmt: skip
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    frozen_t5 = {n: p.detach().clone() for n, p in encoder.text_encoder.named_parameters()}
    frozen_vq = {n: p.detach().clone() for n, p in image_tokenizer.vq_model.named_parameters()}
    uncond = model.uncond_embedding.clone()
    trainer.train()
    assert trainer.state.global_step == 2
    changed = [n for n, p in before.items() if not torch.equal(p, model.get_parameter(n))]
    assert sorted(changed) == sorted(before)
    assert all(torch.equal(p, dict(encoder.text_encoder.named_parameters())[n]) for n, p in frozen_t5.items())
    assert all(torch.equal(p, dict(image_tokenizer.vq_model.named_parameters())[n]) for n, p in frozen_vq.items())
    assert torch.equal(uncond, model.uncond_embedding)
    if not cached:
        trainer.save_model(str(tmp_path / "final"))
        reloaded = T5CaptionEncoder.from_pretrained(tmp_path / "final")  # saved as the processing class
        assert reloaded.max_length == SLOTS


# ---------------------------------------------------------------- commands


def write_tar_shards(folder, num_shards: int = 2, per_shard: int = 2) -> None:
    """webdataset-style shards: `{key}.jpg` + `{key}.txt`."""
    import io
    import tarfile

    import numpy as np
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(0)
    captions = ["a red cat", "a photo of an apple", "the big blue dog on a table", "a small green cat"]
    for shard in range(num_shards):
        with tarfile.open(folder / f"shard-{shard:05d}.tar", "w") as tar:
            for i in range(per_shard):
                key, buffer = f"{shard:02d}{i:04d}", io.BytesIO()
                Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(buffer, format="JPEG")
                caption = captions[(shard * per_shard + i) % len(captions)].encode()
                for name, data in ((f"{key}.jpg", buffer.getvalue()), (f"{key}.txt", caption)):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("command", ["train-t2i", "encode-captions", "sample-geneval", "convert-llamagen"])
def test_help_exits_zero(command, capsys):
    from vapi_trl.cli import main

    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0 and "usage" in capsys.readouterr().out


@pytest.mark.slow
def test_encode_captions_and_train_t2i_from_tar_shards(tmp_path):
    from datasets import load_from_disk

    from tests.conftest import tiny_vq_config
    from vapi_trl.cli import main
    from vapi_trl.models import ImageTokenizerProcessor

    write_tar_shards(tmp_path / "shards")
    make_tiny_llamagen_t2i().save_pretrained(tmp_path / "policy")
    ImageTokenizerProcessor.from_vq_config(tiny_vq_config(), image_size=32).save_pretrained(tmp_path / "vq")
    encoder = make_tiny_caption_encoder()
    encoder.save_pretrained(tmp_path / "t5")  # a T5CaptionEncoder folder (weights included: no reload path)

    assert main(["encode-captions", "--tar_shards", str(tmp_path / "shards"), "--output_dir", str(tmp_path / "feats"),
                 "--text_encoder_name_or_path", str(tmp_path / "t5"), "--max_length", str(SLOTS),
                 "--dtype", "float32", "--batch_size", "3"]) == 0  # fmt: skip
    features = load_from_disk(tmp_path / "feats")
    assert len(features) == 4 and {"image", "prompt", "caption_embeds"} <= set(features.column_names)
    row = features.with_format("numpy")[0]
    expected = encoder([row["prompt"]])
    assert row["caption_embeds"].shape == (int(expected["caption_mask"].sum()), T5_DIM)
    torch.testing.assert_close(torch.as_tensor(row["caption_embeds"]), expected["caption_embeds"][0, -4:])

    common = ["--model_name_or_path", str(tmp_path / "policy"), "--image_tokenizer_path", str(tmp_path / "vq"),
              "--learning_rate", "0.1", "--max_steps", "1", "--per_device_train_batch_size", "4",
              "--num_generations", "2", "--gradient_accumulation_steps", "1", "--bf16", "false",
              "--lpips_weight", "0", "--report_to", "none"]  # fmt: skip
    for source, name in ((["--tar_shards", str(tmp_path / "shards"), "--text_encoder_name_or_path",
                           str(tmp_path / "t5"), "--text_encoder_dtype", "float32"], "raw"),
                         (["--dataset_name", str(tmp_path / "feats")], "cached")):  # fmt: skip
        out = tmp_path / f"run-{name}"
        assert main(["train-t2i", *common, *source, "--output_dir", str(out)]) == 0
        trained = LlamaGenForTextToImage.from_pretrained(out)
        initial = LlamaGenForTextToImage.from_pretrained(tmp_path / "policy")
        assert not torch.equal(trained.lm_head.weight, initial.lm_head.weight)
        assert (out / "processor_config.json").is_file() == (name == "raw")  # the encoder is saved with the policy


@pytest.mark.slow
def test_train_t2i_resumes_instead_of_restarting(tmp_path):
    import json

    from tests.conftest import tiny_vq_config
    from tests.test_bad_input import snapshot
    from vapi_trl.cli import main
    from vapi_trl.models import ImageTokenizerProcessor

    write_tar_shards(tmp_path / "shards")
    make_tiny_llamagen_t2i().save_pretrained(tmp_path / "policy")
    ImageTokenizerProcessor.from_vq_config(tiny_vq_config(), image_size=32).save_pretrained(tmp_path / "vq")
    make_tiny_caption_encoder().save_pretrained(tmp_path / "t5")
    out = tmp_path / "run"
    common = [
        "train-t2i", "--model_name_or_path", str(tmp_path / "policy"), "--image_tokenizer_path", str(tmp_path / "vq"),
        "--tar_shards", str(tmp_path / "shards"), "--text_encoder_name_or_path", str(tmp_path / "t5"),
        "--text_encoder_dtype", "float32", "--output_dir", str(out), "--per_device_train_batch_size", "2",
        "--num_generations", "2", "--gradient_accumulation_steps", "1", "--learning_rate", "0.1", "--bf16", "false",
        "--report_to", "none", "--lpips_weight", "0", "--save_strategy", "steps", "--save_steps", "1",
        "--dataloader_num_workers", "0",
    ]  # fmt: skip
    assert main([*common, "--max_steps", "2"]) == 0
    first = snapshot(out / "checkpoint-1")
    assert main([*common, "--max_steps", "3"]) == 2  # a fresh run into the same folder is refused: nothing lost
    assert main([*common, "--max_steps", "3", "--resume_from_checkpoint", "true"]) == 0
    state = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    assert [entry["step"] for entry in state["log_history"] if "loss" in entry] == [1, 2, 3]  # step 3 only is new
    assert snapshot(out / "checkpoint-1") == first  # the earlier run's checkpoints are not rewritten
    assert LlamaGenForTextToImage.from_pretrained(out).config.task == "t2i"
