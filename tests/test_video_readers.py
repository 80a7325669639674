"""ShanghaiTech Campus and UCSD Ped1 readers on generated fixtures with the official names and encodings."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dataset_fixtures import write_avi
from oddspot.data.avenue import AviVideo
from oddspot.data.ped2 import read_ped1, read_ucsd, which_ucsd
from oddspot.data.shanghaitech import read_frame_mask, read_shanghaitech
from oddspot.errors import OddspotError
from oddspot.video.datasets import detect_layout, open_video_dataset


def make_shanghaitech(root, clips: dict[str, np.ndarray], train: dict[str, int], pixel_only: tuple[str, ...] = ()):
    """ShanghaiTech Campus layout: training/videos/SS_VVV.avi, testing/frames/SS_VVVV/NNN.jpg (0-based, 3 digits),
    testing/test_frame_mask/SS_VVVV.npy (1-D 0/1), testing/test_pixel_mask/SS_VVVV.npy (T x H x W)."""
    (root / "training" / "videos").mkdir(parents=True)
    for name, n in train.items():
        write_avi(root / "training" / "videos" / f"{name}.avi", [np.full((16, 24, 3), 10 * t, np.uint8) for t in range(n)],
                  rate=24)
    for sub in ("frames", "test_frame_mask", "test_pixel_mask"):
        (root / "testing" / sub).mkdir(parents=True)
    for clip, labels in clips.items():
        d = root / "testing" / "frames" / clip
        d.mkdir()
        for t in range(labels.size):
            Image.fromarray(np.full((16, 24, 3), 5 * t, np.uint8)).save(d / f"{t:03d}.jpg")
        pixel = np.zeros((labels.size, 16, 24), np.uint8)
        pixel[labels.astype(bool), 4:8, 4:8] = 1
        np.save(root / "testing" / "test_pixel_mask" / f"{clip}.npy", pixel)
        if clip not in pixel_only:
            np.save(root / "testing" / "test_frame_mask" / f"{clip}.npy", labels.astype(np.int64))
    return root


def test_shanghaitech_layout_names_and_labels(tmp_path):
    labels_a = np.array([0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1])  # 12 frames: 000.jpg .. 011.jpg sort past 010
    labels_b = np.array([1, 0, 0, 1, 1])
    root = make_shanghaitech(tmp_path / "shanghaitech", {"01_0014": labels_a, "12_0151": labels_b},
                             {"01_001": 5, "01_002": 3}, pixel_only=("12_0151",))
    assert detect_layout(root) == "shanghaitech"
    train = open_video_dataset(root, "train")
    assert [v.video_id for v in train] == ["01_001", "01_002"] and all(isinstance(v, AviVideo) for v in train)
    assert [v.frames().shape[0] for v in train] == [5, 3] and [len(v) for v in train] == [5, 3]
    test = open_video_dataset(root, "test", layout="shanghaitech")
    assert [v.video_id for v in test] == ["01_0014", "12_0151"]
    assert [f.name for f in test[0].files][9:] == ["009.jpg", "010.jpg", "011.jpg"]
    np.testing.assert_array_equal(test[0].labels, labels_a)
    np.testing.assert_array_equal(test[1].labels, labels_b)  # no frame mask: from the pixel masks (any pixel set)
    assert test[0].frames().shape == (12, 16, 24, 3)


def test_shanghaitech_frame_count_mismatch_names_the_clip(tmp_path):
    root = make_shanghaitech(tmp_path / "sh", {"01_0014": np.array([0, 1, 0, 0])}, {"01_001": 4})
    np.save(root / "testing" / "test_frame_mask" / "01_0014.npy", np.array([0, 1, 0]))
    video = read_shanghaitech(root, "test")[0]
    with pytest.raises(OddspotError) as err:
        _ = video.labels
    msg = str(err.value)
    assert "\n" not in msg and "01_0014" in msg and "4 frames" in msg and "labels 3" in msg


def test_shanghaitech_bad_frame_mask_and_missing_ground_truth(tmp_path):
    root = make_shanghaitech(tmp_path / "sh", {"01_0014": np.array([0, 1, 0])}, {"01_001": 4})
    np.save(root / "testing" / "test_frame_mask" / "01_0014.npy", np.array([0, 2, 0]))
    with pytest.raises(OddspotError, match="must be 0 or 1"):
        read_frame_mask(root / "testing" / "test_frame_mask" / "01_0014.npy")
    (root / "testing" / "test_frame_mask" / "01_0014.npy").unlink()
    (root / "testing" / "test_pixel_mask" / "01_0014.npy").unlink()
    with pytest.raises(OddspotError, match="ground truth for clip 01_0014 missing"):
        read_shanghaitech(root, "test")


def test_labels_are_checked_against_the_decoded_count_not_the_header(tmp_path, monkeypatch):
    root = make_shanghaitech(tmp_path / "sh", {"01_0014": np.array([0, 1, 0])}, {"01_001": 6})
    video = read_shanghaitech(root, "train")[0]
    monkeypatch.setattr(AviVideo, "declared_frames", lambda self: 9)  # a header that misstates the count
    video.set_ground_truth(np.zeros(9, np.int8))
    with pytest.raises(OddspotError, match="ground truth has 9 frames but the video has 6"):
        _ = video.labels  # labels are checked against the decoded count, not the header's


def make_ped1(root, clips: dict[str, int], gt_clips: dict[str, list[int]], m_ranges: list[str]):
    """UCSD Ped1 layout: UCSDped1/{Train/TrainNNN,Test/TestNNN}/NNN.tif (1-based), Test/TestNNN_gt/NNN.bmp for
    some clips only, Test/UCSDped1.m with 1-based inclusive ranges (several per clip)."""
    base = root / "UCSDped1"
    for name, n in clips.items():
        d = base / ("Train" if name.startswith("Train") else "Test") / name
        d.mkdir(parents=True)
        for t in range(n):
            Image.fromarray(np.full((10, 15), 50 + t, np.uint8)).save(d / f"{t + 1:03d}.tif")
        (d / "._001.tif").write_bytes(b"resource fork")
    for name, anomalous in gt_clips.items():
        d = base / "Test" / f"{name}_gt"
        d.mkdir()
        for t in range(clips[name]):
            m = np.zeros((10, 15), np.uint8)
            if t in anomalous:
                m[2:5, 2:5] = 255
            Image.fromarray(m).save(d / f"{t + 1:03d}.bmp")
    lines = ["TestVideoFile = {};"] + [f"TestVideoFile{{end+1}}.gt_frame = [{r}];" for r in m_ranges]
    (base / "Test" / "UCSDped1.m").write_text("\n".join(lines) + "\n")
    return root


def test_ped1_m_ranges_several_per_clip_and_some_gt_folders(tmp_path):
    clips = {"Train001": 5, "Train002": 4, "Test001": 12, "Test002": 6, "Test003": 5}
    root = make_ped1(tmp_path / "UCSD_Anomaly_Dataset.v1p2", clips, {"Test002": [0, 1]}, ["2:3, 9:12", "4:6", "1:1"])
    assert detect_layout(root) == "ped1" and which_ucsd(root / "UCSDped1") == "ped1"
    train = open_video_dataset(root, "train")
    assert [(v.video_id, len(v)) for v in train] == [("Train001", 5), ("Train002", 4)]
    test = read_ped1(root, "test")
    assert [v.video_id for v in test] == ["Test001", "Test002", "Test003"]
    reference = []  # 1-based inclusive ranges by hand
    for n, ranges in ((12, [(2, 3), (9, 12)]), (6, [(4, 6)]), (5, [(1, 1)])):
        y = np.zeros(n, np.int8)
        for a, b in ranges:
            for frame in range(a, b + 1):
                y[frame - 1] = 1
        reference.append(y)
    for video, y in zip(test, reference):
        np.testing.assert_array_equal(video.labels, y)  # Test002 too: the .m file, not its masks
    assert test[0].frames().shape == (12, 10, 15, 3)


def test_ped1_m_file_for_other_clips_is_an_error(tmp_path):
    root = make_ped1(tmp_path / "ds", {"Train001": 4, "Test001": 5, "Test002": 5}, {}, ["2:3"])
    with pytest.raises(OddspotError, match="intervals for 1 clips but"):
        read_ucsd(root, "test", "ped1")


def test_both_ucsd_sets_under_one_root_need_a_layout(tmp_path):
    root = make_ped1(tmp_path / "ds", {"Train001": 4, "Test001": 5}, {}, ["2:3"])
    for split in ("Train/Train001", "Test/Test001"):
        d = root / "UCSDped2" / split
        d.mkdir(parents=True)
        Image.fromarray(np.zeros((10, 15), np.uint8)).save(d / "001.tif")
    with pytest.raises(OddspotError, match="--layout ped1 or --layout ped2"):
        detect_layout(root)
    assert len(open_video_dataset(root, "train", layout="ped1")[0]) == 4
    assert len(open_video_dataset(root, "train", layout="ped2")[0]) == 1


def test_shanghaitech_fit_and_evaluate_end_to_end(tmp_path, monkeypatch):
    """Fit on the .avi training videos (a header that misstates the count is reported, the decoded count
    used), evaluate on the clips: a clip whose labels disagree with its frames is skipped and named."""
    from oddspot.video import pipeline
    from oddspot.video.autoencoder import AutoencoderConfig, FrameAutoencoder

    rng = np.random.default_rng(0)
    root = tmp_path / "sh"
    (root / "training" / "videos").mkdir(parents=True)
    for name in ("01_001", "01_002"):
        write_avi(root / "training" / "videos" / f"{name}.avi",
                  [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(8)], rate=24)
    labels = {"01_0014": np.array([0] * 6 + [1] * 4), "01_0015": np.array([0, 1] * 5), "02_0161": np.array([0, 1, 1])}
    for sub in ("frames", "test_frame_mask"):
        (root / "testing" / sub).mkdir(parents=True)
    for clip, y in labels.items():
        d = root / "testing" / "frames" / clip
        d.mkdir()
        for t in range(10):  # 02_0161 has 10 frames but 3 labels
            Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(d / f"{t:03d}.jpg")
        np.save(root / "testing" / "test_frame_mask" / f"{clip}.npy", y)
    monkeypatch.setattr(AviVideo, "declared_frames", lambda self: 9)
    warnings: list[str] = []
    model = FrameAutoencoder(AutoencoderConfig(size=(48, 64), encoder="scratch", epochs=1, sigma=0.0, batch_size=8))
    pipeline.fit(root, tmp_path / "run", model, warn=warnings.append)
    assert model.fit_info["train_video_frames"] == {"01_001": 8, "01_002": 8}
    assert sum("declares 9 frames, 8 decoded" in w for w in warnings) == 2
    warnings.clear()
    m = pipeline.evaluate(tmp_path / "run", root, tmp_path / "ev", warn=warnings.append)
    assert sorted(m["per_video"]) == ["01_0014", "01_0015"] and m["frames"] == 20
    assert [s["video"] for s in m["skipped_videos"]] == ["02_0161"] and "test_frame_mask" in m["skipped_videos"][0]["error"]
