"""TTA: the four views are the right transforms and maps computed on a view come back to the frame."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oddspot.errors import OddspotError
from oddspot.video.tta import VIEWS, apply_view, check_views, invert_view, tta_views


def test_four_views_are_the_expected_transforms():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    views = tta_views(x)
    assert len(views) == 4 and VIEWS == ("identity", "hflip", "vflip", "rot180")
    ident, hflip, vflip, rot = views
    assert torch.equal(ident, x)
    assert torch.equal(hflip[..., :, 0], x[..., :, -1])
    assert torch.equal(vflip[..., 0, :], x[..., -1, :])
    assert torch.equal(rot, torch.rot90(x, 2, dims=(-2, -1)))
    # all four differ from each other on a generic input
    flat = [v.reshape(-1) for v in views]
    assert all(not torch.equal(flat[i], flat[j]) for i in range(4) for j in range(i + 1, 4))


def test_maps_are_inverted_back_to_the_frame():
    frame = np.zeros((6, 8), np.float32)
    frame[1, 2] = 1.0  # one "anomalous" pixel
    for view in VIEWS:
        seen = apply_view(frame[None, None], view)[0, 0]
        error_map = seen * 5.0  # any pixel-wise map computed on the transformed frame
        back = invert_view(error_map[None], view)[0]
        assert back[1, 2] == 5.0 and back.sum() == 5.0, view
        if view != "identity":
            assert seen[1, 2] == 0.0  # the view really moved the pixel


def test_spatial_axes_for_channels_last_numpy():
    img = np.arange(4 * 6 * 3).reshape(4, 6, 3)
    out = apply_view(img, "hflip", spatial=(0, 1))
    np.testing.assert_array_equal(out[:, 0], img[:, -1])
    np.testing.assert_array_equal(invert_view(out, "hflip", spatial=(0, 1)), img)


def test_unknown_view_is_rejected():
    with pytest.raises(OddspotError, match="transpose"):
        check_views(["identity", "transpose"])
