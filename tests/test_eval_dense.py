"""Dense evaluations: DAVIS J and F, label propagation, segment retrieval, the segmentation probe and their
metrics, against hand-computed values, brute-force references and independent implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage
from skimage.morphology import disk
from sklearn.metrics import confusion_matrix as sk_confusion

from invarlab.eval.dense import DenseNet, confusion_matrix, iou_per_class, miou_summary
from invarlab.eval.features import Encoder, extract
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
from invarlab.nets import build_backbone


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
