"""Training sources for the dataset-bias studies: COCO full images and ground-truth box crops from an instances
JSON written in COCO's format, class subsets, long-tailed subsamples (against CIFAR-LT's published counts) and
size-matched subsets; the trainer's data config applies them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from invarlab.data.coco import CocoBoxes, CocoImages
from invarlab.data.folder import load_image
from invarlab.data.sampling import (
    class_subset_indices,
    long_tail_counts,
    long_tail_indices,
    match_counts,
    sample_indices,
    select_classes,
    subsample_indices,
)
from invarlab.errors import ConfigError, DataError

# ---------------------------------------------------------------------------------------------------- sampling


def test_long_tail_counts_are_cifar_lt():
    # CIFAR-10-LT at imbalance 100 (Cao et al. 2019 and every LT paper since): 12,406 images.
    assert long_tail_counts(10, 5000, 100) == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert sum(long_tail_counts(100, 500, 100)) == 10847  # CIFAR-100-LT, imbalance 100
    assert sum(long_tail_counts(100, 500, 10)) == 19573  # CIFAR-100-LT, imbalance 10
    assert long_tail_counts(5, 7, 1) == [7] * 5 and long_tail_counts(1, 9, 50) == [9]
    with pytest.raises(ValueError, match="imbalance must be >= 1"):
        long_tail_counts(3, 10, 0.5)


def test_long_tail_indices_follow_the_formula_per_class():
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.repeat(np.arange(6), [40, 35, 50, 30, 45, 60]))
    idx = long_tail_indices(labels, imbalance=10, seed=3)
    counts = np.bincount(labels[idx], minlength=6)
    n_max = 30  # the smallest class
    assert counts.tolist() == [int(n_max * 10 ** (-c / 5) + 1e-9) for c in range(6)]
    assert counts.tolist() == [30, 18, 11, 7, 4, 3]
    assert np.array_equal(idx, np.sort(idx)) and len(np.unique(idx)) == len(idx)
    assert np.array_equal(idx, long_tail_indices(labels, 10, seed=3))
    assert not np.array_equal(idx, long_tail_indices(labels, 10, seed=4))
    by_size = long_tail_indices(labels, 10, seed=3, class_order="size")
    assert np.bincount(labels[by_size], minlength=6)[5] == 30  # class 5 is the largest: the head
    shuffled = np.bincount(labels[long_tail_indices(labels, 10, seed=3, class_order="random")], minlength=6)
    assert sorted(shuffled.tolist()) == sorted(counts.tolist())
    with pytest.raises(ValueError, match=r"class 1 \(rank 1\) has 35 images, the profile asks for 40"):
        long_tail_indices(labels, 1.0, seed=0, n_max=40)


def test_subsample_and_match_counts():
    a = subsample_indices(100, 10, seed=1)
    assert len(a) == 10 and np.array_equal(a, np.sort(a)) and a.max() < 100
    assert np.array_equal(a, subsample_indices(100, 10, seed=1))
    assert not np.array_equal(a, subsample_indices(100, 10, seed=2))
    assert np.array_equal(subsample_indices(5, 10, seed=1), np.arange(5))
    two = match_counts([100, 40], seed=7)
    assert [len(x) for x in two] == [40, 40] and np.array_equal(two[1], np.arange(40))
    three = match_counts([100, 40, 60], seed=7, count=30)
    assert [len(x) for x in three] == [30, 30, 30]
    assert np.array_equal(three[0], match_counts([100, 45], seed=7, count=30)[0])  # own stream per source
    with pytest.raises(ValueError, match="source 1 has 40 images, fewer than the 50"):
        match_counts([100, 40], seed=0, count=50)


def test_select_classes_by_name_pattern_and_group():
    names = ["n02085620", "n02085782", "n01440764", "cat", "dog"]
    assert select_classes(names, ["n0208*"]) == [0, 1]
    assert select_classes(names, ["dog", "cat", "dog"]) == [3, 4]
    assert select_classes(names, ["pets"], groups={"pets": ["cat", "dog"]}) == [3, 4]
    with pytest.raises(ValueError, match="'horse' matches no class"):
        select_classes(names, ["horse"])
    labels = np.array([0, 4, 2, 4, 1, 3])
    assert class_subset_indices(labels, [4, 1]).tolist() == [1, 3, 4]


def test_sample_indices_applies_subset_then_tail_then_count():
    labels = np.repeat(np.arange(4), 20)
    names = ["a", "b", "c", "d"]
    idx = sample_indices(labels, names, seed=0, classes=["b", "d"], imbalance=4)
    assert np.bincount(labels[idx], minlength=4).tolist() == [0, 20, 0, 5]
    idx = sample_indices(labels, names, seed=0, classes=["b", "d"], imbalance=4, max_images=10)
    assert len(idx) == 10 and set(labels[idx]) <= {1, 3}
    assert len(sample_indices(labels, names, seed=0)) == 80


# -------------------------------------------------------------------------------------------------------- COCO
CATEGORIES = [
    {"id": 1, "name": "person", "supercategory": "person"},
    {"id": 3, "name": "car", "supercategory": "vehicle"},
    {"id": 18, "name": "dog", "supercategory": "animal"},
    {"id": 17, "name": "cat", "supercategory": "animal"},
]
# (id, image_id, category_id, bbox, iscrowd)
ANNOTATIONS = [
    (10, 1, 18, [4, 6, 40, 30], 0),  # dog, big: image 1's largest
    (11, 1, 1, [50, 2, 10, 40], 0),  # person, 10 wide: too small for min_size 12
    (12, 2, 3, [0, 0, 64, 48], 1),  # crowd car: never a box sample, never a label
    (13, 2, 17, [20, 10, 16, 16], 0),  # cat
    (14, 3, 1, [8, 8, 48, 24], 0),  # person
    (15, 3, 3, [30, 20, 12, 12], 0),  # car
]


@pytest.fixture(scope="module")
def coco(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("coco")
    images = []
    for i in (1, 2, 3, 4):  # image 4 has no boxes
        name = f"{i:012d}.jpg"
        arr = np.full((48, 64, 3), 40 * i, dtype=np.uint8)
        (root / "train2017").mkdir(exist_ok=True)
        Image.fromarray(arr).save(root / "train2017" / name, quality=95)
        images.append({"id": i, "file_name": name, "width": 64, "height": 48})
    # image 3: the person box is solid red, so its crop must come out solid red
    arr = np.zeros((48, 64, 3), dtype=np.uint8)
    arr[8:32, 8:56] = (255, 0, 0)
    Image.fromarray(arr).save(root / "train2017" / images[2]["file_name"].replace(".jpg", ".png"))
    images[2]["file_name"] = images[2]["file_name"].replace(".jpg", ".png")
    anns = [
        {"id": a, "image_id": im, "category_id": c, "bbox": b, "iscrowd": cr, "area": b[2] * b[3]}
        for a, im, c, b, cr in ANNOTATIONS
    ]
    ann_file = root / "annotations" / "instances_train2017.json"
    ann_file.parent.mkdir()
    ann_file.write_text(json.dumps({"images": images, "annotations": anns, "categories": CATEGORIES}))
    return root / "train2017", ann_file


def test_coco_images_label_is_the_largest_box(coco):
    root, ann = coco
    ds = CocoImages(root, ann, image_size=16)
    assert ds.classes == ["person", "car", "cat", "dog"]  # ascending COCO id
    assert ds.image_ids.tolist() == [1, 2, 3] and ds.labels.tolist() == [3, 2, 0]
    assert ds.class_groups == {"person": ["person"], "vehicle": ["car"], "animal": ["cat", "dog"]}
    image, label, index = ds[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 16, 16) and (label, index) == (3, 0)
    assert torch.equal(image, load_image(root / "000000000001.jpg", 16))  # the image-folder pipeline
    with_empty = CocoImages(root, ann, image_size=16, skip_empty=False)
    assert with_empty.labels.tolist() == [3, 2, 0, -1]


def test_coco_boxes_min_size_crowd_and_crop(coco):
    root, ann = coco
    boxes = CocoBoxes(root, ann, image_size=16, min_size=12)
    assert boxes.annotation_ids.tolist() == [10, 13, 14, 15]  # 11 too narrow, 12 crowd
    assert boxes.labels.tolist() == [3, 2, 0, 1]
    red = boxes[2][0]
    assert (red[0] == 255).all() and (red[1:] == 0).all()  # the person box is solid red
    assert len(CocoBoxes(root, ann, image_size=16, min_size=20)) == 2
    assert len(CocoBoxes(root, ann, image_size=16, min_size=12, include_crowd=True)) == 5
    animals = boxes.subset(
        sample_indices(boxes.labels, boxes.classes, 0, ["animal"], groups=boxes.class_groups)
    )
    assert animals.labels.tolist() == [3, 2] and [animals[i][2] for i in range(2)] == [0, 1]


def test_coco_errors_name_the_file(coco, tmp_path):
    root, ann = coco
    with pytest.raises(DataError, match=r"does not exist; give data\.annotations"):
        CocoImages(root, tmp_path / "none.json", 16)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match=r"bad\.json: not valid JSON"):
        CocoImages(root, bad, 16)
    bad.write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(DataError, match="no 'categories' list"):
        CocoBoxes(root, bad, 16)
    data = json.loads(ann.read_text())
    data["annotations"][0]["category_id"] = 99
    bad.write_text(json.dumps(data))
    with pytest.raises(DataError, match="category_id 99"):
        CocoImages(root, bad, 16)
    with pytest.raises(DataError, match=r"COCO image '.*000000000001\.jpg' is missing"):
        CocoImages(tmp_path, ann, 16)


# ------------------------------------------------------------------------------------------------ trainer hook
def test_train_data_config_samples_folder_and_coco_sources(tmp_path, coco):
    from invarlab.train.api import build_datasets
    from invarlab.train.config import DataConfig

    for c, n in enumerate((12, 9, 10)):
        for i in range(n):
            d = tmp_path / "folder" / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((8, 8, 3), 10 * c + i, dtype=np.uint8)).save(d / f"{i}.png")
    cfg = DataConfig(
        source="folder", root=str(tmp_path / "folder"), image_size=8, imbalance=3, held_out_fraction=0
    )
    train, held = build_datasets(cfg, seed=0)
    assert held is None and np.bincount(train.labels.numpy()).tolist() == [9, 5, 3]
    cfg = DataConfig(
        source="folder",
        root=str(tmp_path / "folder"),
        image_size=8,
        classes=["class2"],
        max_images=4,
        held_out_fraction=0,
    )
    train, _ = build_datasets(cfg, seed=0)
    assert train.labels.tolist() == [2] * 4
    root, ann = coco
    cfg = DataConfig(
        source="coco_boxes",
        root=str(root),
        annotations=str(ann),
        image_size=8,
        min_box=12,
        classes=["animal"],
        held_out_fraction=0,
    )
    train, _ = build_datasets(cfg, seed=0)
    assert sorted(train.labels.tolist()) == [2, 3]
    cfg.classes = ["horse"]
    with pytest.raises(ConfigError, match="'horse' matches no class"):
        build_datasets(cfg, seed=0)
