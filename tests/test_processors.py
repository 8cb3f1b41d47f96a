"""The family processors turn dataset rows into exactly the tensors the policies' own `prepare_condition` built
before 0.2 (reproduced here from that code), save and load offline, read the old image-tokenizer layout, and are
what the trainer calls."""

import json
import warnings

import numpy as np
import pytest
import torch
from transformers import AutoProcessor

from vapi_trl.batch import StepBatch
from vapi_trl.models import (
    ImageTokenizerProcessor,
    JanusImageGenerationProcessor,
    LlamaGenProcessor,
    VARImageTokenizerProcessor,
    VARProcessor,
    processor_for_policy,
)
from vapi_trl.models.janus.processing_janus import janus_special_token_ids, tokenize_janus_prompts
from vapi_trl.models.llamagen.text_encoder import pad_caption_features

from .conftest import (
    TINY_T2I_SLOTS,
    make_caption_dataset,
    make_image_dataset,
    make_tiny_caption_encoder,
    make_tiny_janus_tokenizer,
    make_tiny_llamagen_t2i,
)
from .test_trainer import make_args, make_trainer
from .test_var import make_policy as make_var_policy
from .test_var import make_tokenizer as make_var_tokenizer


CAPTIONS = ["a red cat", "the big blue dog on a table", "a photo of an apple"]


# The pre-0.2 `prepare_condition` bodies of the policies (git 8d88afc), kept as the reference the processors must
# reproduce.
def old_class_condition(policy, rows):
    labels = torch.tensor([int(row["class_label"]) for row in rows], dtype=torch.long)
    return {"class_labels": labels.to(policy.device)}


def old_t2i_condition(policy, rows, processing_class):
    slots = policy.config.cls_token_num
    if rows[0].get("caption_embeds") is not None:
        masks = [row["caption_mask"] for row in rows] if rows[0].get("caption_mask") is not None else None
        embeds, mask = pad_caption_features([row["caption_embeds"] for row in rows], slots=slots, masks=masks)
    else:
        condition = processing_class.encode([row["prompt"] for row in rows], device=policy.device)
        embeds, mask = condition["caption_embeds"], condition["caption_mask"]
    return {"caption_embeds": embeds.to(policy.device), "caption_mask": mask.to(policy.device)}


def old_janus_condition(policy, rows, processing_class):
    policy.set_special_token_ids(processing_class)
    condition = tokenize_janus_prompts([row["prompt"] for row in rows], processing_class)
    return {key: value.to(policy.device) for key, value in condition.items()}


def assert_same_condition(new: dict, old: dict) -> None:
    assert list(new) == list(old)
    for key, value in old.items():
        assert new[key].dtype == value.dtype and new[key].device == value.device, key
        torch.testing.assert_close(new[key], value, rtol=0, atol=0)


def test_llamagen_c2i_processor_equals_the_old_condition(tiny_policy, tiny_image_tokenizer):
    rows = [{"class_label": 3}, {"class_label": np.int64(0)}, {"class_label": 9.0}]
    processor = LlamaGenProcessor.from_policy(tiny_policy, tiny_image_tokenizer)
    assert processor.condition_columns == tiny_policy.condition_columns == ("class_label",)
    assert_same_condition(processor.prepare_condition(rows), old_class_condition(tiny_policy, rows))
    assert processor.num_classes == 10 and processor.image_tokenizer is tiny_image_tokenizer
    with pytest.raises(ValueError, match=r"class_label 10 is outside the policy's class range \[0, 10\)"):
        processor.prepare_condition([{"class_label": 10}])


def test_llamagen_t2i_processor_equals_the_old_condition_from_captions_and_from_cached_features():
    policy, encoder = make_tiny_llamagen_t2i(), make_tiny_caption_encoder()
    rows = [{"prompt": caption} for caption in CAPTIONS]
    processor = LlamaGenProcessor.from_policy(policy, text_processor=encoder)
    assert processor.condition_columns == policy.condition_columns == ("prompt",)
    old = old_t2i_condition(policy, rows, encoder)
    assert_same_condition(processor.prepare_condition(rows), old)
    # compact cached features (valid tokens only), as `encode-captions` writes them, and full slots with a mask
    compact = [{"caption_embeds": e[m.bool()].numpy()} for e, m in zip(old["caption_embeds"], old["caption_mask"])]
    full = [{"caption_embeds": e.numpy(), "caption_mask": m.numpy()} for e, m in zip(*old.values())]
    for cached in (compact, full):
        without_encoder = LlamaGenProcessor.from_policy(policy)
        assert_same_condition(without_encoder.prepare_condition(cached), old_t2i_condition(policy, cached, None))
        torch.testing.assert_close(without_encoder.prepare_condition(cached)["caption_embeds"], old["caption_embeds"])


def test_var_processor_equals_the_old_condition():
    image_tokenizer = make_var_tokenizer()
    policy = make_var_policy(image_tokenizer)
    rows = [{"class_label": label} for label in (1, 7, 0)]
    processor = VARProcessor.from_policy(policy, image_tokenizer)
    assert_same_condition(processor.prepare_condition(rows), old_class_condition(policy, rows))
    processor.prepare_policy(policy)  # the multi-scale tokenizer fits the policy
    with pytest.raises(ValueError, match="num_classes=5 but the policy 10"):
        VARProcessor(image_tokenizer, num_classes=5).prepare_policy(policy)


def test_janus_processor_equals_the_old_condition_and_sets_the_special_ids_once(tiny_janus, tiny_janus_tokenizer):
    rows = [{"prompt": caption} for caption in CAPTIONS]
    processor = JanusImageGenerationProcessor(tiny_janus_tokenizer)
    tiny_janus.generation_config.bos_token_id = None  # as a checkpoint without the ids would have it
    processor.prepare_policy(tiny_janus)
    ids = janus_special_token_ids(tiny_janus_tokenizer)
    config = tiny_janus.generation_config
    assert (config.bos_token_id, config.pad_token_id) == (ids["bos_token_id"], ids["pad_token_id"])
    assert config.generation_kwargs["boi_token_id"] == ids["boi_token_id"]

    # Preparing conditions no longer touches the policy's generation_config.
    config.generation_kwargs = {"boi_token_id": ids["boi_token_id"], "marker": 1}
    new = processor.prepare_condition(rows)
    assert config.generation_kwargs == {"boi_token_id": ids["boi_token_id"], "marker": 1}
    assert_same_condition(new, old_janus_condition(tiny_janus, rows, tiny_janus_tokenizer))


def test_deprecated_policy_prepare_condition_warns_and_delegates(tiny_policy, tiny_janus, tiny_janus_tokenizer):
    rows = [{"class_label": 2}, {"class_label": 5}]
    with pytest.warns(FutureWarning, match="prepare_condition.*deprecated.*LlamaGenProcessor"):
        labels = tiny_policy.prepare_condition(rows)
    assert_same_condition(labels, old_class_condition(tiny_policy, rows))
    prompts = [{"prompt": caption} for caption in CAPTIONS]
    with pytest.warns(FutureWarning, match="JanusImageGenerationProcessor"):
        janus = tiny_janus.prepare_condition(prompts, tiny_janus_tokenizer)
    assert_same_condition(janus, old_janus_condition(tiny_janus, prompts, tiny_janus_tokenizer))


def test_processors_round_trip_offline(tmp_path, tiny_policy, tiny_image_tokenizer, tiny_janus, tiny_janus_tokenizer):
    pixels = torch.rand(2, 3, 32, 32) * 2 - 1
    c2i = LlamaGenProcessor.from_policy(tiny_policy, tiny_image_tokenizer)
    c2i.save_pretrained(tmp_path / "c2i")
    with open(tmp_path / "c2i" / "processor_config.json", encoding="utf-8") as handle:
        saved = json.load(handle)
    assert saved["processor_class"] == "LlamaGenProcessor" and saved["num_classes"] == 10 and saved["task"] == "c2i"
    assert "image_tokenizer" not in saved  # its own folder, not the JSON
    for reloaded in (
        LlamaGenProcessor.from_pretrained(tmp_path / "c2i"),
        AutoProcessor.from_pretrained(tmp_path / "c2i"),
    ):
        assert type(reloaded) is LlamaGenProcessor and reloaded.num_classes == 10
        assert torch.equal(reloaded.image_tokenizer.encode(pixels), tiny_image_tokenizer.encode(pixels))
        rows = [{"class_label": 4}]
        assert_same_condition(reloaded.prepare_condition(rows), c2i.prepare_condition(rows))

    policy, encoder = make_tiny_llamagen_t2i(), make_tiny_caption_encoder()
    t2i = LlamaGenProcessor.from_policy(policy, tiny_image_tokenizer, text_processor=encoder)
    t2i.save_pretrained(tmp_path / "t2i")
    reloaded = AutoProcessor.from_pretrained(tmp_path / "t2i")
    assert reloaded.task == "t2i" and reloaded.num_caption_slots == TINY_T2I_SLOTS
    rows = [{"prompt": caption} for caption in CAPTIONS]
    assert_same_condition(reloaded.prepare_condition(rows), t2i.prepare_condition(rows))

    var_tokenizer = make_var_tokenizer()
    var = VARProcessor.from_policy(make_var_policy(var_tokenizer), var_tokenizer)
    var.save_pretrained(tmp_path / "var")
    reloaded = AutoProcessor.from_pretrained(tmp_path / "var")
    assert type(reloaded) is VARProcessor and isinstance(reloaded.image_tokenizer, VARImageTokenizerProcessor)
    var_pixels = torch.rand(2, 3, var_tokenizer.image_size, var_tokenizer.image_size) * 2 - 1
    assert torch.equal(reloaded.image_tokenizer.encode(var_pixels), var_tokenizer.encode(var_pixels))

    janus = JanusImageGenerationProcessor(tiny_janus_tokenizer, image_tokenizer=tiny_image_tokenizer)
    janus.save_pretrained(tmp_path / "janus")
    reloaded = JanusImageGenerationProcessor.from_pretrained(tmp_path / "janus")
    assert reloaded.special_token_ids == janus.special_token_ids
    rows = [{"prompt": caption} for caption in CAPTIONS]
    assert_same_condition(reloaded.prepare_condition(rows), janus.prepare_condition(rows))
    assert torch.equal(reloaded.image_tokenizer.encode(pixels), tiny_image_tokenizer.encode(pixels))


def test_an_image_tokenizer_folder_of_the_old_layout_still_loads(tmp_path, tiny_policy, tiny_image_tokenizer):
    tiny_image_tokenizer.save_pretrained(tmp_path / "image_tokenizer")  # processor_config.json + vq_model/
    assert sorted(p.name for p in (tmp_path / "image_tokenizer").iterdir()) == ["processor_config.json", "vq_model"]
    with pytest.warns(FutureWarning, match="layout before the family processors"):
        processor = LlamaGenProcessor.from_pretrained(tmp_path / "image_tokenizer")
    assert isinstance(processor.image_tokenizer, ImageTokenizerProcessor)
    ids = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(processor.image_tokenizer.decode(ids), tiny_image_tokenizer.decode(ids))
    processor.prepare_policy(tiny_policy)
    # The old folder keeps loading as a bare image tokenizer too, without a warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert isinstance(AutoProcessor.from_pretrained(tmp_path / "image_tokenizer"), ImageTokenizerProcessor)


def test_the_call_returns_condition_and_image_ids(tiny_policy, tiny_image_tokenizer):
    processor = LlamaGenProcessor.from_policy(tiny_policy, tiny_image_tokenizer)
    images = list(make_image_dataset(2)["image"])
    batch = processor(rows=[{"class_label": 1}, {"class_label": 2}], images=images)
    assert batch["class_labels"].tolist() == [1, 2]
    assert torch.equal(batch["input_ids"], tiny_image_tokenizer(images)["input_ids"])
    with pytest.raises(ValueError, match="Pass `rows`"):
        processor()


def test_processor_mismatches_are_refused(tiny_policy, tiny_image_tokenizer):
    with pytest.raises(ValueError, match="num_classes=3 but the policy 10"):
        LlamaGenProcessor(tiny_image_tokenizer, num_classes=3).prepare_policy(tiny_policy)
    with pytest.raises(ValueError, match="task='t2i' but the policy has task='c2i'"):
        LlamaGenProcessor(tiny_image_tokenizer, task="t2i").prepare_policy(tiny_policy)
    with pytest.raises(TypeError, match="class-conditional and takes no text processor"):
        processor_for_policy(tiny_policy, make_tiny_caption_encoder())
    other = ImageTokenizerProcessor.from_vq_config(tiny_image_tokenizer.vq_model.config, image_size=32)
    with pytest.raises(ValueError, match="Two image tokenizers"):
        processor_for_policy(tiny_policy, LlamaGenProcessor.from_policy(tiny_policy, tiny_image_tokenizer), other)


def test_trainer_calls_the_processor_and_both_ways_of_building_it_sample_the_same(
    tmp_path, tiny_policy, tiny_image_tokenizer
):
    rows = [row for row in make_image_dataset(2) for _ in range(2)]
    old_style = make_trainer(tmp_path / "old", tiny_policy, tiny_image_tokenizer)
    assert isinstance(old_style.processor, LlamaGenProcessor) and old_style.processing_class is None
    torch.manual_seed(1)
    old = StepBatch.from_dict(old_style._generate_and_score_completions(rows))

    torch.manual_seed(0)
    processor = LlamaGenProcessor.from_policy(tiny_policy, tiny_image_tokenizer)
    from vapi_trl import VAPiTrainer

    new_style = VAPiTrainer(
        model=tiny_policy, args=make_args(tmp_path / "new"), train_dataset=make_image_dataset(),
        processing_class=processor,
    )  # fmt: skip
    assert new_style.processor is processor and new_style.processing_class is None
    torch.manual_seed(1)
    new = StepBatch.from_dict(new_style._generate_and_score_completions(rows))
    assert torch.equal(new.completion_ids, old.completion_ids) and torch.equal(new.target_ids, old.target_ids)
    assert_same_condition(new.condition, old.condition)
    torch.testing.assert_close(new.advantages, old.advantages)
    torch.testing.assert_close(new.old_per_token_logps, old.old_per_token_logps)


def test_janus_trainer_records_the_special_ids_once_and_saves_the_tokenizer(tmp_path, tiny_janus):
    from vapi_trl import VAPiConfig, VAPiTrainer
    from vapi_trl.models import janus_image_tokenizer_from_model

    tokenizer = make_tiny_janus_tokenizer()
    tiny_janus.generation_config.generation_kwargs = {}
    processor = JanusImageGenerationProcessor(tokenizer, image_tokenizer=janus_image_tokenizer_from_model(tiny_janus))
    args = VAPiConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=2, num_generations=2, max_steps=1, learning_rate=1e-3,
        bf16=False, report_to="none", save_strategy="no", lpips_weight=0.0,
    )  # fmt: skip
    trainer = VAPiTrainer(
        model=tiny_janus, args=args, train_dataset=make_caption_dataset(2), processing_class=processor
    )
    assert (
        tiny_janus.generation_config.generation_kwargs["boi_token_id"] == processor.special_token_ids["boi_token_id"]
    )
    assert trainer.processing_class is tokenizer  # saved with checkpoints, as before
