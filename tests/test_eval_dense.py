"""Dense evaluations: DAVIS J and F, label propagation, segment retrieval, the segmentation probe and their
metrics, against hand-computed values, brute-force references and independent implementations."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage
from skimage.morphology import disk
from sklearn.metrics import confusion_matrix as sk_confusion

from invarlab.cli import main
from invarlab.data.davis import DavisVideos
from invarlab.data.voc import VOC_CLASSES
from invarlab.eval.config import EvalConfig
from invarlab.eval.context import EvalContext
from invarlab.eval.dense import DenseNet, confusion_matrix, iou_per_class, miou_summary
from invarlab.eval.dense_suite import DENSE_EVALUATORS
from invarlab.eval.features import Encoder, encoder_from_checkpoint, extract
from invarlab.eval.propagation import (
    boundary_measure,
    context_frames,
    davis_summary,
    evaluate_videos,
    label_propagation,
    mask_boundary,
    propagate_frame,
    region_similarity,
    segment_video,
    soft_labels,
)
from invarlab.eval.retrieval import (
    boundary_saliency,
    majority_class,
    mask_prototypes,
    pool_weights,
    segment_retrieval,
)
from invarlab.eval.seg_probe import cell_labels, seg_probe
from invarlab.nets import build_backbone, make_checkpoint


def _square(h, w, y0, y1, x0, x1):
    m = torch.zeros(h, w, dtype=torch.bool)
    m[y0:y1, x0:x1] = True
    return m


# ----------------------------------------------------------------------------------------------- J and F
def test_region_similarity_by_hand():
    a = _square(6, 6, 0, 2, 0, 2)  # 4 px
    b = _square(6, 6, 1, 3, 1, 3)  # 4 px, 1 shared
    empty = torch.zeros(6, 6, dtype=torch.bool)
    j = region_similarity(torch.stack([a, a, empty, a, empty]), torch.stack([b, a, empty, empty, a]))
    assert j.tolist() == pytest.approx([1 / 7, 1.0, 1.0, 0.0, 0.0])
    void = torch.zeros(6, 6, dtype=torch.bool)
    void[0, 0] = True  # leaves a with 3 px, b untouched: inter 1, union 6
    assert region_similarity(a[None], b[None], void[None]).item() == pytest.approx(1 / 6)


def _davis_f_reference(pred: np.ndarray, gt: np.ndarray, bound_th: float = 0.008) -> float:
    """DAVIS's boundary F written out with numpy arrays, scipy's dilation and skimage's disk (independent)."""

    def bmap(seg):
        seg = seg.astype(bool)
        e = np.zeros_like(seg)
        s = np.zeros_like(seg)
        se = np.zeros_like(seg)
        e[:, :-1] = seg[:, 1:]
        s[:-1, :] = seg[1:, :]
        se[:-1, :-1] = seg[1:, 1:]
        b = (seg ^ e) | (seg ^ s) | (seg ^ se)
        b[-1, :] = seg[-1, :] ^ e[-1, :]
        b[:, -1] = seg[:, -1] ^ s[:, -1]
        b[-1, -1] = False
        return b

    d = bound_th if bound_th >= 1 else math.ceil(bound_th * np.linalg.norm(pred.shape))
    fb, gb = bmap(pred), bmap(gt)
    fd = ndimage.binary_dilation(fb, disk(int(d)))
    gd = ndimage.binary_dilation(gb, disk(int(d)))
    n_f, n_g = fb.sum(), gb.sum()
    if n_f == 0 and n_g > 0:
        p, r = 1.0, 0.0
    elif n_f > 0 and n_g == 0:
        p, r = 0.0, 1.0
    elif n_f == 0 and n_g == 0:
        p, r = 1.0, 1.0
    else:
        p, r = (fb & gd).sum() / n_f, (gb & fd).sum() / n_g
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def test_boundary_pixels_of_a_square():
    b = mask_boundary(_square(20, 20, 5, 15, 5, 15)[None])[0]
    # inside: last column and last row of the square; outside: the column and row before it and the corner
    assert int(b.sum()) == 10 + 10 + 10 + 9 + 1
    assert b[4, 4] and b[5, 4] and b[4, 5] and b[14, 14] and not b[15, 15] and not b[10, 10]
    # a mask touching the image border has no boundary along it
    assert mask_boundary(torch.ones(1, 5, 5, dtype=torch.bool)).sum() == 0


def test_boundary_measure_by_hand():
    gt = _square(20, 20, 5, 15, 5, 15)
    far = _square(20, 20, 0, 3, 16, 19)
    empty = torch.zeros_like(gt)
    cases = [
        (gt, gt, 1.0),
        (gt.roll(1, 1), gt, 1.0),  # within the 1-pixel tolerance of a 20 x 20 image (ceil(0.008 * 28.3))
        (empty, gt, 0.0),  # P = 1, R = 0
        (gt, empty, 0.0),  # P = 0, R = 1
        (empty, empty, 1.0),
    ]
    for pred, true, expect in cases:
        assert boundary_measure(pred[None], true[None]).item() == pytest.approx(expect)
    # gt's 40 boundary pixels all found; pred adds the far square's unmatched ones: it touches the top edge,
    # so only its last column (3), last row (2) and the column before it (3) are boundary: 8
    f = boundary_measure((gt | far)[None], gt[None]).item()
    p, r = 40 / 48, 1.0
    assert f == pytest.approx(2 * p * r / (p + r))


def test_boundary_measure_matches_the_reference():
    g = torch.Generator().manual_seed(0)
    for trial in range(12):
        h, w = 24 + trial, 40 - trial
        blobs = F.avg_pool2d(torch.rand(2, 1, h, w, generator=g), 5, 1, 2)[:, 0] > 0.5
        bound = [0.008, 0.1, 2.0][trial % 3]
        f = boundary_measure(blobs[:1], blobs[1:], bound_th=bound).item()
        assert f == pytest.approx(_davis_f_reference(blobs[0].numpy(), blobs[1].numpy(), bound)), trial


def test_davis_summary_means_objects_then_frames():
    s = [(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])), (torch.tensor([0.6]), torch.tensor([0.2]))]
    out = davis_summary(s)
    assert out["J-Mean"] == pytest.approx((0.5 + 0.6) / 2 * 100)
    assert out["J-Recall"] == pytest.approx((0.5 + 1.0) / 2 * 100)
    assert out["F-Mean"] == pytest.approx((1.0 + 0.2) / 2 * 100)
    assert out["J&F-Mean"] == pytest.approx((out["J-Mean"] + out["F-Mean"]) / 2)


# ------------------------------------------------------------------------------------------ propagation
def test_context_frames():
    assert context_frames(1, 20) == [0]
    assert context_frames(5, 20) == [0, 1, 2, 3, 4]
    assert context_frames(30, 3) == [0, 27, 28, 29]


def _brute_force(query, keys, values, topk, radius, temperature):
    """The propagation formula position by position."""
    h, w = query.shape[1:]
    q = F.normalize(query, dim=0)
    k = F.normalize(keys, dim=1)
    out = torch.zeros(values.shape[1], h, w, dtype=torch.float64)
    for y in range(h):
        for x in range(w):
            cands = []
            for m in range(keys.shape[0]):
                for yy in range(h):
                    for xx in range(w):
                        if (y - yy) ** 2 + (x - xx) ** 2 <= radius**2:
                            cands.append((float(q[:, y, x] @ k[m, :, yy, xx]), m, yy, xx))
            cands.sort(key=lambda c: -c[0])
            top = cands[:topk]
            wts = torch.softmax(torch.tensor([c[0] for c in top], dtype=torch.float64) / temperature, 0)
            for wt, (_, m, yy, xx) in zip(wts, top, strict=True):
                out[:, y, x] += wt * values[m, :, yy, xx].double()
    return out


def test_tiled_propagation_equals_the_formula():
    g = torch.Generator().manual_seed(1)
    query, keys = torch.randn(8, 6, 7, generator=g), torch.randn(3, 8, 6, 7, generator=g)
    values = torch.rand(3, 4, 6, 7, generator=g)
    expect = _brute_force(query, keys, values, topk=5, radius=2.5, temperature=0.2)
    for tile in (2, 3, 16):
        got = propagate_frame(
            F.normalize(query, dim=0), F.normalize(keys, dim=1), values, 5, 2.5, 0.2, tile=tile
        )
        torch.testing.assert_close(got.double(), expect, rtol=1e-4, atol=1e-5)


def test_static_clip_reproduces_the_first_mask():
    g = torch.Generator().manual_seed(2)
    frame = torch.randn(128, 8, 8, generator=g)  # distinct positions: sim(p, q) ~ 0 for p != q
    feats = frame.expand(6, -1, -1, -1).clone()
    # objects aligned with the 4-pixel cells of a 32 x 32 image, as full-height bands: no corner inside the
    # image, so the round trip to the 8 x 8 map and back (bilinear) is exact
    mask = torch.zeros(32, 32, dtype=torch.long)
    mask[:, 8:20] = 1
    mask[:, 24:28] = 2
    pred = segment_video(feats, mask, [1, 2], topk=10, context=20, radius=12, temperature=0.05)
    assert torch.equal(pred, mask.expand(6, -1, -1))
    out = evaluate_videos([("static", feats, mask.expand(6, -1, -1), torch.ones(6, dtype=torch.bool))])
    assert out["J&F-Mean"] == pytest.approx(100.0) and out["objects"] == 2 and out["videos"] == 1
    # rectangles: the soft labels are carried unchanged, so every frame is the first one's round trip
    # (bilinear upsampling rounds convex corners off: one pixel each), and J stays near 1
    mask[:] = 0
    mask[4:16, 8:20], mask[20:28, 0:12], mask[24:32, 24:32] = 1, 2, 3
    first = soft_labels(mask, [1, 2, 3], (8, 8))
    torch.testing.assert_close(label_propagation(feats, first), first.expand(6, -1, -1, -1))
    pred = segment_video(feats, mask, [1, 2, 3])
    assert torch.equal(pred[0], mask)
    assert all(torch.equal(pred[t], pred[1]) for t in range(2, 6))
    for k in (1, 2, 3):
        assert region_similarity(pred[1:] == k, mask.expand(5, -1, -1) == k).min() > 0.95


def test_propagation_follows_a_moving_object():
    # features say "object" on the object and a position code elsewhere, so the label has to move with it
    g = torch.Generator().manual_seed(3)
    background = F.normalize(torch.randn(32, 8, 8, generator=g), dim=0)
    obj = F.normalize(torch.randn(32, generator=g), dim=0)
    feats, masks = [], []
    for t in range(5):
        f = background.clone()
        f[:, 2:4, 1 + t : 3 + t] = obj[:, None, None]
        feats.append(f)
        m = torch.zeros(16, 16, dtype=torch.long)
        m[4:8, 2 + 2 * t : 6 + 2 * t] = 1
        masks.append(m)
    pred = segment_video(torch.stack(feats), masks[0], [1], radius=3)
    assert torch.equal(pred, torch.stack(masks))


# ------------------------------------------------------------------------------------- shared metrics
def test_confusion_and_iou_against_sklearn():
    g = torch.Generator().manual_seed(4)
    target = torch.randint(0, 5, (40, 30), generator=g)
    target[:5] = 255
    pred = torch.randint(0, 5, (40, 30), generator=g)
    conf = confusion_matrix(pred, target, 5)
    keep = target != 255
    expect = sk_confusion(target[keep].numpy(), pred[keep].numpy(), labels=range(5))
    assert np.array_equal(conf.numpy(), expect)
    c = expect.astype(float)
    iou = np.diag(c) / (c.sum(0) + c.sum(1) - np.diag(c))
    assert np.allclose(iou_per_class(conf).numpy(), iou)
    conf[4] = conf[:, 4] = 0  # class 4 absent from both: no IoU, not in the mean
    s = miou_summary(conf, list("abcde"))
    assert math.isnan(s["iou"]["e"]) and s["miou"] == pytest.approx(
        float(iou_per_class(conf)[:4].mean() * 100)
    )


def test_dense_net_resolutions_and_dilation_matches_extract():
    torch.manual_seed(0)
    enc = Encoder(build_backbone("resnet18", width=0.25).eval(), None, "k", "test")
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    shapes = {m: DenseNet(enc, "layer3", m)(images).shape[-2:] for m in ("none", "stride", "dilation")}
    assert shapes == {"none": (4, 4), "stride": (8, 8), "dilation": (8, 8)}
    ds = [(images[i], 0, i) for i in range(2)]
    ref, _ = extract(enc, ds, "layer4", dilate=True)
    torch.testing.assert_close(DenseNet(enc, "layer4", "dilation")(images), ref)
    # the encoder's own backbone is left as trained
    assert enc.backbone.feature_maps(images.float(), ("layer3",))["layer3"].shape[-2:] == (4, 4)


# ------------------------------------------------------------------------------------------- retrieval
def test_pooling_equals_upsample_then_sum():
    g = torch.Generator().manual_seed(5)
    feats = torch.randn(6, 5, 7, generator=g)
    weights = torch.rand(3, 20, 28, generator=g)
    up = F.interpolate(feats[None], size=(20, 28), mode="bilinear", align_corners=False)[0]
    direct = torch.einsum("chw,shw->sc", up, weights)
    via = torch.einsum("shw,chw->sc", pool_weights(weights, (5, 7)), feats)
    torch.testing.assert_close(via, direct, rtol=1e-4, atol=1e-4)
    protos = mask_prototypes(feats, weights, 0.5)
    expect = F.normalize(torch.einsum("chw,shw->sc", up, weights * (weights > 0.5)), dim=1)
    torch.testing.assert_close(protos, expect, rtol=1e-4, atol=1e-5)


def test_majority_class():
    classes = torch.tensor([[0, 1, 1, 2], [2, 2, 255, 0], [3, 3, 0, 0]])
    masks = torch.zeros(4, 3, 4, dtype=torch.bool)
    masks[0, :2] = True  # 1 x2, 2 x3 (0 and 255 do not vote) -> 2
    masks[1, 0, 1:3] = masks[1, 2, 0:2] = True  # 1 x2, 3 x2: tie -> lower class
    masks[2, 2, 2:] = masks[2, 1, 2] = True  # background and ignore only -> -1
    assert majority_class(classes, masks, 4).tolist() == [2, 1, -1, -1]


def _retrieval_fixture():
    """Images 16 x 16 with one square object; features 4 x 4 with a class code on the object's cells."""
    g = torch.Generator().manual_seed(6)
    codes = F.normalize(torch.randn(3, 16, generator=g), dim=1)  # background, class 1, class 2
    items = []
    for cls, look_like, y in [(1, 1, 0), (2, 2, 4), (1, 1, 8), (2, 2, 0), (1, 1, 4), (2, 1, 8)]:
        feats = codes[0][:, None, None].repeat(1, 4, 4) + 0.01 * torch.randn(16, 4, 4, generator=g)
        feats[:, y // 4 : y // 4 + 2, 1:3] = codes[look_like][:, None, None]
        classes = torch.zeros(16, 16, dtype=torch.long)
        classes[y : y + 8, 4:12] = cls
        items.append((feats, (classes > 0).float()[None], classes))
    return items[:3], items[3:]


def test_segment_retrieval_known_answer():
    train, val = _retrieval_fixture()
    names = ["background", "one", "two"]
    out = segment_retrieval(iter(train), iter(val), names)
    # val: a 2 retrieved right, a 1 right, a 2 that looks like a 1 -> predicted 1 on its 64 pixels.
    # class 1: TP 64, FP 64 -> 1/2; class 2: TP 64, FN 64 -> 1/2; background always right -> 1.
    assert out["iou"] == pytest.approx({"background": 100.0, "one": 50.0, "two": 50.0})
    assert out["miou"] == pytest.approx(200 / 3)
    assert out["bank_size"] == 3 and out["bank_skipped"] == 0 and out["val_images"] == 3
    # the subset {2}: the bank keeps the one 2, class-1 pixels are ignored, so every 2 is retrieved as 2
    sub = segment_retrieval(iter(train), iter(val), names, subsets={"two": [2]})
    assert sub["iou_two"] == pytest.approx({"two": 100.0}) and sub["miou_two"] == pytest.approx(100.0)
    # an empty train mask is skipped, not labelled
    empty = (train[0][0], torch.zeros(1, 16, 16), train[0][2])
    assert segment_retrieval(iter([*train, empty]), iter(val), names)["bank_skipped"] == 1


def test_boundary_saliency_finds_a_central_object():
    g = torch.Generator().manual_seed(7)
    feats = torch.randn(8, 1, 1, generator=g).repeat(1, 6, 6) + 0.05 * torch.randn(8, 6, 6, generator=g)
    feats[:, 2:4, 2:4] = torch.randn(8, 1, 1, generator=g)
    s = boundary_saliency(feats)
    assert s.min() == 0 and s.max() == 1
    assert s[2:4, 2:4].min() > 0.9 and s[0].max() < 0.5


# ------------------------------------------------------------------------------------------- seg probe
def test_cell_labels_take_the_centre_pixel():
    classes = torch.arange(64).view(8, 8)
    assert cell_labels(classes, (2, 2)).tolist() == [[18, 22], [50, 54]]


def test_seg_probe_separates_a_synthetic_fixture():
    g = torch.Generator().manual_seed(8)
    means = 2 * torch.randn(3, 12, generator=g)

    def item():
        cells = torch.randint(0, 3, (6, 6), generator=g)
        feats = means[cells].permute(2, 0, 1) + torch.randn(12, 6, 6, generator=g)
        classes = cells.repeat_interleave(4, 0).repeat_interleave(4, 1)
        classes[0, 0] = 255
        return feats, classes

    train, val = [item() for _ in range(20)], [item() for _ in range(10)]
    out = seg_probe(train, val, ["a", "b", "c"], pixels_per_image=20)
    assert out["train_pixels"] == 20 * 20
    assert out["miou"] > 75 and out["pixel_accuracy"] > 85
    # a probe on pure noise does not separate them
    noise = [(torch.randn(12, 6, 6, generator=g), c) for _, c in val]
    assert seg_probe(noise[:5], noise[5:], ["a", "b", "c"])["miou"] < 50


# ------------------------------------------------------------------------------- CLI on a tiny world run
WORLD = """
world:
  instances_per_category: 2
  render: {{resolution: 16, supersample: 1, compile: false, batch_size: 64}}
cache_dir: {cache}
datasets:
  scenes: {{kind: scene_centric, num_images: 24, split: all, seed: 6}}
  clips: {{kind: clips, num_images: 12, clip_length: 4, split: all, seed: 7}}
"""


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("dense")
    (root / "world.yaml").write_text(WORLD.format(cache=root / "cache"))
    run_dir = root / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    torch.manual_seed(3)
    backbone = build_backbone("resnet18", stem="cifar", width=0.125)
    torch.save(make_checkpoint(backbone), run_dir / "checkpoints" / "step_00000010.pt")
    (run_dir / "config.yaml").write_text("method:\n  view_size: 16\n")
    return run_dir, str(root / "world.yaml")


def _cli(*args):
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", *map(str, args)])
    return exit_info.value.code


def test_cli_dense_evaluations_on_the_world(tiny_run, capsys):
    run_dir, world = tiny_run
    common = [f"world_preset={world}", "device=cpu", "dense.seg_probe.max_iter=50"]
    for command in ("segment-retrieval", "label-propagation", "seg-probe"):
        assert _cli(command, run_dir, *common) in (0, None), capsys.readouterr().err
    results = json.loads((run_dir / "results.json").read_text())
    for name in ("segment_retrieval", "label_propagation", "seg_probe"):
        assert set(results[name]) == {"model", "random"}, name
        assert results["_meta"][name]["dataset"] == "world"
    r = results["segment_retrieval"]["model"]
    assert 0 <= r["miou"] <= 100 and r["bank_size"] > 0 and r["val_images"] == 12
    # masks=auto on the world is one mask per object: scenes of 2-6 objects give more masks than images
    assert results["_meta"]["segment_retrieval"]["masks"] == "gt_instances"
    assert r["val_masks"] > r["val_images"]
    p = results["label_propagation"]["model"]
    assert 0 <= p["J&F-Mean"] <= 100 and p["videos"] == 3 and p["objects"] > 0
    assert results["_meta"]["label_propagation"]["topk"] == 10
    s = results["seg_probe"]["model"]
    assert 0 <= s["miou"] <= 100 and s["train_pixels"] == 12 * 8 * 8  # every cell of 12 maps of 8 x 8


def test_world_propagation_equals_the_function_on_the_clips(tiny_run):
    run_dir, world = tiny_run
    cfg = EvalConfig(world_preset=world, device="cpu", representations=["model"])
    ctx = EvalContext(run_dir, cfg)
    values = DENSE_EVALUATORS["label_propagation"](ctx, "model")
    net = DenseNet(encoder_from_checkpoint(run_dir), "layer3", "stride", 16)
    ds = ctx.dataset("clips")
    clip = np.asarray(ds.meta["clip"])
    videos = []
    for c in np.unique(clip):
        pos = np.nonzero(clip == c)[0]  # frames are stored in order
        masks = torch.from_numpy(np.asarray(ds.rendered.instance_mask[pos], dtype=np.int64))
        frames = torch.stack([ds[int(i)][0] for i in pos])
        videos.append(
            (f"clip_{c:04d}", net(frames), masks.masked_fill(masks == 255, 0), torch.ones(4, dtype=bool))
        )
    expect = evaluate_videos(videos)
    assert values.pop("per_video") == pytest.approx(expect.pop("per_video"))
    assert values == pytest.approx(expect)


def _write_voc_and_davis(root):
    """A 4-image VOC2012 (train = val) and a 2-video DAVIS in their layouts: blocky objects, noisy images."""
    from invarlab.data.voc import voc_palette

    def png(path, mask):
        im = Image.fromarray(mask.astype(np.uint8), mode="P")
        im.putpalette(voc_palette().ravel().tolist())
        path.parent.mkdir(parents=True, exist_ok=True)
        im.save(path)

    rng = np.random.default_rng(0)
    voc = root / "VOCdevkit" / "VOC2012"
    for k in range(4):
        cls = np.zeros((24, 24), np.uint8)
        cls[4:16, 4:16] = (1, 15)[k % 2]
        image = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
        image[cls > 0] = (200, 30, 30) if k % 2 == 0 else (30, 30, 200)
        (voc / "JPEGImages").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(voc / "JPEGImages" / f"{k}.jpg")
        png(voc / "SegmentationClass" / f"{k}.png", cls)
        png(voc / "SegmentationObject" / f"{k}.png", (cls > 0).astype(np.uint8))
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    for split in ("train", "val"):
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("0\n1\n2\n3\n")
    davis = root / "DAVIS"
    for v in ("a", "b"):
        image = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
        mask = np.zeros((24, 32), np.uint8)
        mask[:, 8:16], mask[:, 24:32] = 1, 2
        for t in range(5):  # a static video
            (davis / "JPEGImages" / "480p" / v).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(davis / "JPEGImages" / "480p" / v / f"{t:05d}.jpg", quality=100)
            png(davis / "Annotations" / "480p" / v / f"{t:05d}.png", mask)
    (davis / "ImageSets" / "2017").mkdir(parents=True)
    (davis / "ImageSets" / "2017" / "val.txt").write_text("a\nb\n")


def test_cli_dense_evaluations_on_voc_and_davis(tiny_run, tmp_path, capsys):
    run_dir, _ = tiny_run
    _write_voc_and_davis(tmp_path)
    common = ["representations=[model]", "device=cpu", "dense.voc_size=16", "dense.seg_probe.max_iter=50"]
    assert _cli("segment-retrieval", run_dir, *common, "--dataset", "voc", "--root", tmp_path) in (0, None)
    assert _cli("seg-probe", run_dir, *common, "--dataset", "voc", "--root", tmp_path) in (0, None)
    assert _cli(
        "label-propagation", run_dir, *common, "--dataset", "davis", "--root", tmp_path / "DAVIS"
    ) in (
        0,
        None,
    )
    capsys.readouterr()
    results = json.loads((run_dir / "results.json").read_text())
    r = results["segment_retrieval_voc"]["model"]
    assert r["bank_size"] == 4 and r["val_images"] == 4 and "miou_7cls" in r
    assert (
        results["_meta"]["segment_retrieval_voc"]["masks"] == "gt"
    )  # auto: MaskContrast's one mask per image
    # val = train, so every query finds itself: each object gets its own class, the mask is the ground truth
    assert r["miou"] == pytest.approx(100.0) and set(r["iou"]) == {"background", *VOC_CLASSES}
    assert 0 <= results["seg_probe_voc"]["model"]["miou"] <= 100
    d = results["label_propagation_davis"]["model"]
    assert d["videos"] == 2 and d["objects"] == 4
    net = DenseNet(encoder_from_checkpoint(run_dir), "layer3", "stride")
    videos = [(v.name, net(v.frames), v.masks, v.annotated) for v in DavisVideos(tmp_path, "val")]
    expect = evaluate_videos(videos)
    assert d.pop("per_video") == pytest.approx(expect.pop("per_video")) and d == pytest.approx(expect)
    assert results["_meta"]["label_propagation_davis"]["root"] == str(tmp_path / "DAVIS")
    # wrong combinations fail in one line
    for args, message in (
        (("segment-retrieval", run_dir, "--dataset", "davis", "--root", tmp_path), "runs on world or voc"),
        (("label-propagation", run_dir, "--dataset", "voc", "--root", tmp_path), "runs on world or davis"),
        (("seg-probe", run_dir, "--dataset", "voc"), "needs --root"),
        (("seg-probe", run_dir, "--dataset", "coco"), "dense.dataset"),
        (("segment-retrieval", run_dir, "--dataset", "voc", "--root", tmp_path / "nope"), "does not exist"),
    ):
        assert _cli(*args) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
