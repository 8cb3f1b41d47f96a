"""`vapi-trl sample-geneval`: GenEval layout, run record, family detection and resuming (LlamaGen T2I, Janus)."""

import json
import os

import pytest
import torch
from PIL import Image

from tests.conftest import (
    make_tiny_caption_encoder,
    make_tiny_janus,
    make_tiny_janus_tokenizer,
    make_tiny_llamagen_t2i,
    tiny_vq_config,
)
from vapi_trl.cli import main as cli_main
from vapi_trl.evaluation.geneval import detect_family, read_geneval_metadata


PROMPTS = [
    {"tag": "single_object", "include": [{"class": "cat", "count": 1}], "prompt": "a photo of a cat"},
    {"tag": "colors", "include": [{"class": "dog", "count": 1, "color": "red"}], "prompt": "a photo of a red dog"},
    {"tag": "counting", "include": [{"class": "apple", "count": 2}], "exclude": [], "prompt": "a photo of two apple"},
]


def write_metadata(path) -> list[str]:
    lines = [json.dumps(entry) for entry in PROMPTS]
    path.write_text("\n".join(lines) + "\n\n")  # a trailing empty line is ignored
    return lines


@pytest.fixture
def llamagen_t2i_dir(tmp_path):
    """`convert-llamagen`-style folder: `policy/` (+ the T5CaptionEncoder saved with it, as training does) and
    `image_tokenizer/`."""
    from vapi_trl.models import ImageTokenizerProcessor

    root = tmp_path / "llamagen-t2i"
    model = make_tiny_llamagen_t2i()
    model.save_pretrained(root / "policy")
    make_tiny_caption_encoder().save_pretrained(root / "policy")
    torch.manual_seed(0)
    ImageTokenizerProcessor.from_vq_config(tiny_vq_config(), image_size=32).save_pretrained(root / "image_tokenizer")
    return root


@pytest.fixture
def janus_dir(tmp_path):
    path = tmp_path / "janus"
    make_tiny_janus().save_pretrained(path)
    make_tiny_janus_tokenizer().save_pretrained(path)
    return path


def check_layout(out, lines, num_images, size, grid=True):
    assert sorted(name for name in os.listdir(out) if name != "run.json") == [f"{i:05d}" for i in range(len(lines))]
    for index, line in enumerate(lines):
        folder = out / f"{index:05d}"
        assert (folder / "metadata.jsonl").read_text() == line + "\n"  # the whole line, copied as is
        names = sorted(os.listdir(folder / "samples"))
        assert names == [f"{i:04d}.png" for i in range(num_images)]
        with Image.open(folder / "samples" / "0000.png") as image:
            assert image.size == (size, size) and image.mode == "RGB"
        assert (folder / "grid.png").is_file() == grid
        if grid:
            with Image.open(folder / "grid.png") as image:
                assert image.size == (size * num_images, size)


def test_read_metadata_errors(tmp_path):
    path = tmp_path / "m.jsonl"
    lines = write_metadata(path)
    entries = read_geneval_metadata(path)
    assert [line for line, _ in entries] == lines and entries[2][1]["tag"] == "counting"
    path.write_text('{"tag": "x"}\n')
    with pytest.raises(ValueError, match=r"m.jsonl:1 has no non-empty string `prompt`"):
        read_geneval_metadata(path)
    path.write_text("{not json\n")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_geneval_metadata(path)


def test_family_detection(llamagen_t2i_dir, janus_dir, tmp_path):
    from tests.conftest import tiny_llamagen_config
    from vapi_trl.models import LlamaGenForClassToImage

    assert detect_family(str(llamagen_t2i_dir / "policy")) == "llamagen-t2i"
    assert detect_family(str(janus_dir)) == "janus"
    LlamaGenForClassToImage(tiny_llamagen_config()).save_pretrained(tmp_path / "c2i")
    with pytest.raises(ValueError, match="not a text-to-image policy"):
        detect_family(str(tmp_path / "c2i"))


@pytest.mark.slow
def test_sample_geneval_llamagen_t2i_layout_and_resume(llamagen_t2i_dir, tmp_path):
    metadata = tmp_path / "evaluation_metadata.jsonl"
    lines = write_metadata(metadata)
    out = tmp_path / "geneval"
    argv = ["sample-geneval", "--model_name_or_path", str(llamagen_t2i_dir / "policy"), "--metadata_file", str(metadata),
            "--output_dir", str(out), "--num_images", "3", "--batch_size", "2", "--device", "cpu"]  # fmt: skip
    assert cli_main(argv) == 0
    check_layout(out, lines, num_images=3, size=32)
    run = json.loads((out / "run.json").read_text())
    # LlamaGen defaults: the official T2I script's CFG 7.5 and top-k 2000, recorded
    assert (run["family"], run["cfg_scale"], run["top_k"], run["temperature"]) == ("llamagen-t2i", 7.5, 2000, 1.0)
    assert run["image_tokenizer_path"].endswith("image_tokenizer") and run["num_prompts"] == 3

    # Resume: a complete folder is skipped (untouched), an incomplete one is regenerated identically.
    first = (out / "00000" / "samples" / "0001.png").read_bytes()
    kept_mtime = os.stat(out / "00001" / "grid.png").st_mtime_ns
    os.remove(out / "00000" / "samples" / "0001.png")
    assert cli_main(argv) == 0
    assert (out / "00000" / "samples" / "0001.png").read_bytes() == first  # same seed stream per prompt
    assert os.stat(out / "00001" / "grid.png").st_mtime_ns == kept_mtime
    check_layout(out, lines, num_images=3, size=32)

    with pytest.raises(ValueError, match=r"other settings \(cfg_scale: 7.5 -> 2.0\)"):
        cli_main(["--debug", *argv, "--cfg_scale", "2.0"])


@pytest.mark.slow
def test_sample_geneval_janus_layout_and_resume(janus_dir, tmp_path, capsys):
    metadata = tmp_path / "evaluation_metadata.jsonl"
    lines = write_metadata(metadata)[:2]
    out = tmp_path / "geneval"
    argv = ["sample-geneval", "--model_name_or_path", str(janus_dir), "--metadata_file", str(metadata), "--output_dir", str(out),
            "--num_images", "2", "--max_prompts", "2", "--no_grid", "--device", "cpu"]  # fmt: skip
    assert cli_main(argv) == 0
    check_layout(out, lines, num_images=2, size=64, grid=False)
    run = json.loads((out / "run.json").read_text())
    assert (run["family"], run["cfg_scale"], run["top_k"], run["temperature"]) == ("janus", 5.0, 0, 1.0)
    capsys.readouterr()
    assert cli_main(argv) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["skipped_prompts"] == 2
