"""The colour-transform probe (docs/eval_looc.md): its ten copies against torchvision's functional colour ops,
and its accuracy against features that see colour (high) and features blind to it (chance)."""

from __future__ import annotations

import pytest
import torch

from invarlab.eval.sensitivity import JITTER_SETTINGS, colour_jitter_copies, colour_jitter_probe
from torchvision_compat import import_torchvision


def _images(n: int, size: int = 8) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return 0.15 + 0.7 * torch.rand(n, 3, size, size, generator=g)  # off the clamps: every op changes them


def test_copies_equal_torchvision_colour_ops():
    import_torchvision()
    from torchvision.transforms.v2 import functional as tvf

    x = _images(3)
    s = (0.4, 0.3, 0.5, 0.1)
    copies, setting, source = colour_jitter_copies(x, s)
    k = len(JITTER_SETTINGS)
    assert (
        k == 10
        and setting.tolist() == list(range(k)) * 3
        and source.tolist() == [i for i in range(3) for _ in range(k)]
    )
    expected = {
        "identity": x,
        "grayscale": tvf.rgb_to_grayscale(x, num_output_channels=3),
        "brightness-": tvf.adjust_brightness(x, 1 - s[0]),
        "brightness+": tvf.adjust_brightness(x, 1 + s[0]),
        "contrast-": tvf.adjust_contrast(x, 1 - s[1]),
        "contrast+": tvf.adjust_contrast(x, 1 + s[1]),
        "saturation-": tvf.adjust_saturation(x, 1 - s[2]),
        "saturation+": tvf.adjust_saturation(x, 1 + s[2]),
        "hue-": tvf.adjust_hue(x, -s[3]),
        "hue+": tvf.adjust_hue(x, s[3]),
    }
    for c, (name, _, _) in enumerate(JITTER_SETTINGS):
        # luma: torchvision weighs red 0.2989, ITU-R 601 (PIL and ours) 0.299, a difference of <= 1e-4
        atol = 2e-4 if name.startswith(("gray", "contrast", "saturation")) else 2e-6
        torch.testing.assert_close(copies[setting == c], expected[name], atol=atol, rtol=0, msg=name)
    # the ten settings are ten different images
    per_image = copies[:k].flatten(1)
    assert torch.cdist(per_image, per_image).add(torch.eye(k)).min() > 1e-3


def test_probe_reads_colour_statistics_and_not_colour_blind_features():
    images = _images(60)

    def colour_stats(x):  # per-channel mean and spread: every setting moves them differently
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)

    def blind(x):  # what a fully colour-invariant representation gives: the same features for every copy
        return x.new_ones(x.shape[0], 4)

    sensitive = colour_jitter_probe(colour_stats, images, seed=1)
    invariant = colour_jitter_probe(blind, images, seed=1)
    assert sensitive["chance"] == 10.0 and sensitive["n_test"] == 15 * 10 and sensitive["num_values"] == 10
    assert sensitive["top1"] > 60  # 6x chance (74.7 here)
    assert invariant["top1"] == pytest.approx(10.0)
    # nearest neighbours in the features' cosine geometry: the same verdicts
    assert sensitive["knn_top1"] > 40 and invariant["knn_top1"] == pytest.approx(10.0)


def test_strengths_are_checked():
    with pytest.raises(ValueError, match="4 positive strengths"):
        colour_jitter_copies(_images(1), (0.4, 0.4, 0.4))
    with pytest.raises(ValueError, match=r"hue <= 0\.5"):
        colour_jitter_copies(_images(1), (0.4, 0.4, 0.4, 0.6))
