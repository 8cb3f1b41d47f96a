import json
import logging
import os

import numpy as np
import pytest
from datasets import Dataset, Features, Image, IterableDataset, Value
from PIL import Image as PILImage

from vapi_trl.data import check_image, drop_undecodable_images, load_image_dataset


def write_image_folder(root, num_good: int = 4, corrupt: tuple[int, ...] = (1,)) -> list[str]:
    """An `imagefolder` with `metadata.jsonl` (columns `file_name`, `caption_original`); some files are corrupt."""
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(0)
    names = []
    with open(os.path.join(root, "metadata.jsonl"), "w") as handle:
        for index in range(num_good + len(corrupt)):
            name = f"img_{index}.png"
            path = os.path.join(root, name)
            if index in corrupt:
                good = PILImage.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
                good.save(path)
                with open(path, "r+b") as image_file:  # valid PNG header, truncated pixel data
                    image_file.truncate(60)
            else:
                PILImage.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)
            handle.write(
                json.dumps({"file_name": name, "caption_original": f"caption {index}", "score": index}) + "\n"
            )
            names.append(name)
    return names


def test_check_image_catches_truncated_files(tmp_path):
    write_image_folder(tmp_path, num_good=1, corrupt=(1,))
    assert check_image(str(tmp_path / "img_0.png")) is None
    error = check_image({"bytes": None, "path": str(tmp_path / "img_1.png")})
    assert error is not None and "Error" in error
    assert check_image({"bytes": b"not an image", "path": None}).startswith("UnidentifiedImageError")
    assert check_image(None) == "no image"


def test_local_image_folder_renames_columns_and_reports_bad_images(tmp_path, caplog):
    write_image_folder(tmp_path / "data", num_good=4, corrupt=(1, 3))
    with caplog.at_level(logging.WARNING, logger="vapi_trl.data"):
        dataset = load_image_dataset(str(tmp_path / "data"), caption_column="caption_original")
    assert isinstance(dataset, Dataset) and dataset.column_names == ["image", "prompt"]
    assert len(dataset) == 4
    assert sorted(dataset["prompt"]) == ["caption 0", "caption 2", "caption 4", "caption 5"]
    assert isinstance(dataset[0]["image"], PILImage.Image)
    message = caplog.text
    assert "2 of 6 rows" in message and "row 1" in message and "img_1.png" in message and "img_3.png" in message


def test_subset_and_save_to_disk_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    images = [PILImage.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)) for _ in range(6)]
    Dataset.from_dict(
        {
            "jpg": images,
            "txt": [f"c{i}" for i in range(6)],
            "prompt": ["stale"] * 6,
            "gt_ids": [[i] for i in range(6)],
        },
        features=Features(
            {"jpg": Image(), "txt": Value("string"), "prompt": Value("string"), "gt_ids": [Value("int64")]}
        ),
    ).save_to_disk(str(tmp_path / "saved"))
    dataset = load_image_dataset(str(tmp_path / "saved"), image_column="jpg", caption_column="txt", num_samples=3)
    assert dataset["prompt"] == ["c0", "c1", "c2"]  # the caption column replaces a clashing `prompt` column
    assert sorted(dataset.column_names) == ["gt_ids", "image", "prompt"]
    shuffled = load_image_dataset(
        str(tmp_path / "saved"), image_column="jpg", caption_column="txt", num_samples=6, shuffle_seed=1
    )
    assert sorted(shuffled["prompt"]) == [f"c{i}" for i in range(6)] and shuffled["prompt"] != [
        f"c{i}" for i in range(6)
    ]


def test_streaming_reports_bad_images_lazily(tmp_path, caplog):
    write_image_folder(tmp_path / "data", num_good=3, corrupt=(0,))
    dataset = load_image_dataset(str(tmp_path / "data"), caption_column="caption_original", streaming=True)
    assert isinstance(dataset, IterableDataset)
    with caplog.at_level(logging.WARNING, logger="vapi_trl.data"):
        rows = list(dataset)
    assert [row["prompt"] for row in rows] == ["caption 1", "caption 2", "caption 3"]
    assert all(isinstance(row["image"], PILImage.Image) for row in rows)
    assert "Dropped row 0" in caplog.text and "img_0.png" in caplog.text and "1 dropped of 1" in caplog.text
    taken = load_image_dataset(
        str(tmp_path / "data"), caption_column="caption_original", streaming=True, num_samples=2
    )
    assert [row["prompt"] for row in taken] == ["caption 1"]  # the subset counts rows before dropping


def test_empty_captions_and_class_labels(tmp_path):
    rng = np.random.default_rng(0)
    images = [PILImage.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)) for _ in range(3)]
    dataset = Dataset.from_dict({"image": images, "prompt": ["ok", " ", "fine"], "label": [0, 1, 2]})
    kept, report = drop_undecodable_images(dataset, "prompt")
    assert kept["prompt"] == ["ok", "fine"] and report.failures[0][0] == 1 and "caption" in report.failures[0][2]
    dataset.save_to_disk(str(tmp_path / "c2i"))
    c2i = load_image_dataset(str(tmp_path / "c2i"), caption_column=None, label_column="label")
    assert sorted(c2i.column_names) == ["class_label", "image"] and c2i["class_label"] == [0, 1, 2]


def test_clear_errors(tmp_path):
    write_image_folder(tmp_path / "data", num_good=1, corrupt=())
    with pytest.raises(ValueError, match="caption_column"):
        load_image_dataset(str(tmp_path / "data"), caption_column="text")
    with pytest.raises(ValueError, match="exactly one"):
        load_image_dataset(str(tmp_path / "data"), caption_column="caption_original", label_column="score")
    write_image_folder(tmp_path / "bad", num_good=0, corrupt=(0,))
    with pytest.raises(ValueError, match="No image"):
        load_image_dataset(str(tmp_path / "bad"), caption_column="caption_original")
