"""VOC and DAVIS loaders on tiny fixtures written in the real on-disk layouts (palette PNGs via Pillow)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from invarlab.data.davis import DavisVideos
from invarlab.data.voc import (
    VOC_CLASSES,
    VOCClassification,
    VOCSegmentation,
    read_index_png,
    voc_palette,
)
from invarlab.errors import DataError
from invarlab.eval.svm import voc07_svm


def _palette_png(path, mask: np.ndarray) -> None:
    im = Image.fromarray(mask.astype(np.uint8), mode="P")
    im.putpalette(voc_palette().ravel().tolist())
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)


def _jpeg(path, h: int, w: int, seed: int) -> np.ndarray:
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, quality=95)
    return rgb


def _voc_masks(k: int, h: int = 12, w: int = 16) -> tuple[np.ndarray, np.ndarray]:
    cls = np.zeros((h, w), np.uint8)
    obj = np.zeros((h, w), np.uint8)
    cls[2:6, 3:9], obj[2:6, 3:9] = 1 + k % 20, 1
    cls[7:11, 10:15], obj[7:11, 10:15] = 15, 2  # a person
    cls[6, 3:9] = obj[6, 3:9] = 255  # void border
    return cls, obj


def _write_voc(root, ids: list[str], missing: str | None = None) -> None:
    base = root / "VOCdevkit" / "VOC2012"
    for k, i in enumerate(ids):
        if i != missing:
            _jpeg(base / "JPEGImages" / f"{i}.jpg", 12, 16, k)
        cls, obj = _voc_masks(k)
        _palette_png(base / "SegmentationClass" / f"{i}.png", cls)
        _palette_png(base / "SegmentationObject" / f"{i}.png", obj)
        xml = "".join(
            f"<object><name>{n}</name><difficult>{d}</difficult></object>"
            for n, d in ((VOC_CLASSES[k % 20], 0), ("person", k % 2), ("dog", 1))
        )
        (base / "Annotations").mkdir(parents=True, exist_ok=True)
        (base / "Annotations" / f"{i}.xml").write_text(
            f"<annotation><filename>{i}</filename>{xml}</annotation>"
        )
    for kind in ("Segmentation", "Main"):
        (base / "ImageSets" / kind).mkdir(parents=True, exist_ok=True)
        (base / "ImageSets" / kind / "train.txt").write_text("\n".join(ids) + "\n")


def test_palette_is_the_devkit_colour_map():
    pal = voc_palette()
    # Known entries of the VOC colour map: background black, aeroplane dark red, person (15) pink-ish, void.
    assert pal[0].tolist() == [0, 0, 0]
    assert pal[1].tolist() == [128, 0, 0]
    assert pal[15].tolist() == [192, 128, 128]
    assert pal[255].tolist() == [224, 224, 192]
    assert len({tuple(c) for c in pal.tolist()}) == 256


def test_voc_segmentation_reads_palette_masks_and_skips_missing(tmp_path, caplog):
    ids = ["2007_000001", "2007_000002", "2007_000003"]
    _write_voc(tmp_path, ids, missing="2007_000002")
    with caplog.at_level(logging.WARNING):
        ds = VOCSegmentation(tmp_path, "train", objects=True)
    assert ds.ids == ["2007_000001", "2007_000003"] and ds.skipped == ["2007_000002"]
    assert "skipped 1" in caplog.text
    s = ds.sample(1)
    cls, obj = _voc_masks(2)
    assert s.image.dtype == torch.uint8 and s.image.shape == (3, 12, 16)
    assert torch.equal(s.classes, torch.from_numpy(cls.astype(np.int64)))
    assert torch.equal(s.objects, torch.from_numpy(obj.astype(np.int64)))
    image, label, index = ds[0]
    assert label == -1 and index == 0 and torch.equal(image, ds.sample(0).image)
    # the same root given as VOCdevkit or as VOC2012 works; resizing keeps masks as indices (nearest)
    for root in (tmp_path / "VOCdevkit", tmp_path / "VOCdevkit" / "VOC2012"):
        small = VOCSegmentation(root, "train", size=8).sample(0)
        assert small.image.shape == (3, 8, 8) and small.classes.shape == (8, 8)
        assert set(small.classes.unique().tolist()) <= {0, 1, 15, 255}


def test_rgb_masks_map_back_through_the_palette(tmp_path):
    cls, _ = _voc_masks(4)
    rgb = voc_palette()[cls]
    rgb[0, 0] = (1, 2, 3)  # not a VOC colour: void
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    expect = cls.copy()
    expect[0, 0] = 255
    assert np.array_equal(read_index_png(tmp_path / "rgb.png"), expect)


def test_voc_wrong_layouts_fail_clearly(tmp_path):
    with pytest.raises(DataError, match="JPEGImages"):
        VOCSegmentation(tmp_path)
    _write_voc(tmp_path, ["a", "b"])
    with pytest.raises(DataError, match=r"val\.txt.*splits there: train"):
        VOCSegmentation(tmp_path, "val")
    with pytest.raises(DataError, match="does not exist"):
        VOCSegmentation(tmp_path / "nope")
    for i in ("a", "b"):
        (tmp_path / "VOCdevkit/VOC2012/JPEGImages" / f"{i}.jpg").unlink()
    with pytest.raises(DataError, match="none of the 2 listed ids"):
        VOCSegmentation(tmp_path)


def test_voc_classification_labels_follow_voc_and_feed_the_svm(tmp_path):
    ids = [f"{k:06d}" for k in range(8)]
    _write_voc(tmp_path, ids)
    ds = VOCClassification(tmp_path, "train", year="2012", image_size=8, resize=10)
    t = ds.targets
    assert t.shape == (8, 20)
    person, dog = VOC_CLASSES.index("person"), VOC_CLASSES.index("dog")
    # person: difficult (0) in odd images, present (1) in even ones; dog always difficult only; image 14 % 20
    # would be person itself (not here: k < 8)
    assert t[:, person].tolist() == [1, 0, 1, 0, 1, 0, 1, 0]
    assert (t[:, dog] == 0).all()
    for k in range(8):
        assert t[k, k] == 1 and (t[k, [c for c in range(20) if c not in (k, person, dog)]] == -1).all()
    assert ds.labels.tolist() == list(range(8))
    image, label, _ = ds[3]
    assert image.shape == (3, 8, 8) and label == 3
    # the targets are in voc07_svm's label convention: it runs and scores perfectly separable features
    feats = torch.nn.functional.one_hot(torch.arange(8), 8).float()
    out = voc07_svm(feats, t[:, :8], feats, t[:, :8], class_names=list(VOC_CLASSES[:8]))
    assert out["mAP"] == pytest.approx(100.0)


def _write_davis(root, videos: dict[str, int], size=(10, 14), no_first: str | None = None) -> dict:
    base = root / "DAVIS"
    truth = {}
    for v, (name, n) in enumerate(videos.items()):
        masks = []
        for t in range(n):
            _jpeg(base / "JPEGImages" / "480p" / name / f"{t:05d}.jpg", *size, 10 * v + t)
            m = np.zeros(size, np.uint8)
            m[2:5, t : t + 4] = 1
            m[6:9, 8:12] = 2
            masks.append(m)
            if not (name == no_first and t == 0) and t != 2:  # frame 2 is unannotated
                _palette_png(base / "Annotations" / "480p" / name / f"{t:05d}.png", m)
        truth[name] = np.stack(masks)
    (base / "ImageSets" / "2017").mkdir(parents=True)
    (base / "ImageSets" / "2017" / "val.txt").write_text("\n".join([*videos, "ghost"]) + "\n")
    return truth


def test_davis_videos(tmp_path, caplog):
    truth = _write_davis(tmp_path, {"bear": 4, "car": 3, "dog": 3}, no_first="dog")
    with caplog.at_level(logging.WARNING):
        videos = DavisVideos(tmp_path, "val")
    assert videos.names == ["bear", "car"] and sorted(videos.skipped) == ["dog", "ghost"]
    assert "skipped 2" in caplog.text
    v = videos[0]
    assert v.name == "bear" and v.frames.shape == (4, 3, 10, 14) and v.frames.dtype == torch.uint8
    assert v.annotated.tolist() == [True, True, False, True]
    expect = torch.from_numpy(truth["bear"].astype(np.int64))
    expect[2] = 0
    assert torch.equal(v.masks, expect) and v.object_ids == [1, 2]
    small = DavisVideos(tmp_path / "DAVIS", "val", size=5)[1]
    assert small.frames.shape == (3, 3, 5, 7) and small.masks.shape == (3, 5, 7)
    assert set(small.masks.unique().tolist()) <= {0, 1, 2}


def test_davis_wrong_layouts_fail_clearly(tmp_path):
    with pytest.raises(DataError, match=r"JPEGImages/480p/<video>"):
        DavisVideos(tmp_path)
    _write_davis(tmp_path, {"bear": 2})
    with pytest.raises(DataError, match=r"train\.txt not found|'.*train\.txt' not found; splits there: val"):
        DavisVideos(tmp_path, "train")
    (tmp_path / "DAVIS/ImageSets/2017/val.txt").write_text("ghost\n")
    with pytest.raises(DataError, match="none of the 1 listed videos"):
        DavisVideos(tmp_path)
