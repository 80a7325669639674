"""Video readers on fixtures in each layout: Avenue (.avi + volLabel .mat), frame folders, UCSD Ped2, generator."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from dataset_fixtures import write_avi
from oddspot.data.avenue import AviVideo, labels_from_intervals, parse_size, read_avenue, read_frame_folders, read_interval_mat
from oddspot.data.ped2 import read_ped2
from oddspot.data.synthetic_video import EVENT_TYPES, generate_video_dataset
from oddspot.errors import OddspotError
from oddspot.video.datasets import decode_videos, detect_layout, open_video_dataset, open_videos


def _moving_square(t: int, h: int = 32, w: int = 48) -> np.ndarray:
    frame = np.full((h, w, 3), 40, np.uint8)
    x = 4 + 3 * t
    frame[10:22, x : x + 12] = (220, 200, 30)
    return frame


@pytest.fixture
def avenue_root(tmp_path):
    root = tmp_path / "avenue"
    (root / "training_videos").mkdir(parents=True)
    (root / "testing_videos").mkdir()
    (root / "testing_label_mask").mkdir()
    frames = [_moving_square(t) for t in range(8)]
    write_avi(root / "training_videos" / "01.avi", frames)
    write_avi(root / "testing_videos" / "01.avi", frames)
    masks = np.empty((1, 8), dtype=object)
    for t in range(8):
        m = np.zeros((32, 48), np.uint8)
        if 3 <= t <= 5:
            m[10:20, 10:20] = 1
        masks[0, t] = m
    savemat(str(root / "testing_label_mask" / "1_label.mat"), {"volLabel": masks})
    return root


def test_avenue_avi_and_vollabel(avenue_root):
    assert detect_layout(avenue_root) == "avenue"
    test = read_avenue(avenue_root, "test")
    assert [v.video_id for v in test] == ["01"]
    v = test[0]
    assert isinstance(v, AviVideo)
    assert len(v) == 8
    np.testing.assert_array_equal(v.labels, [0, 0, 0, 1, 1, 1, 0, 0])
    frames = v.frames()
    assert frames.shape == (8, 32, 48, 3) and frames.dtype == np.uint8
    # lossy codec: the decoded frame is close to what was written
    assert np.abs(frames[2].astype(int) - _moving_square(2)).mean() < 8
    small = v.frames((16, 24))
    assert small.shape == (8, 16, 24, 3)
    assert open_video_dataset(avenue_root, "train")[0].labels is None


def test_avenue_missing_ground_truth_names_file(avenue_root):
    (avenue_root / "testing_label_mask" / "1_label.mat").unlink()
    with pytest.raises(OddspotError, match="1_label.mat"):
        read_avenue(avenue_root, "test")


def test_corrupt_video_is_reported_and_skipped(avenue_root):
    (avenue_root / "testing_videos" / "02.avi").write_bytes(b"not a video at all")
    masks = np.empty((1, 1), dtype=object)
    masks[0, 0] = np.zeros((4, 4))
    savemat(str(avenue_root / "testing_label_mask" / "2_label.mat"), {"volLabel": masks})
    good, skipped = decode_videos(read_avenue(avenue_root, "test"), (16, 24))
    assert [v.video_id for v in good] == ["01"]
    assert len(skipped) == 1 and skipped[0]["video"] == "02" and "02.avi" in skipped[0]["error"]


def _frame_folder(root, split, vid, n, h=16, w=20):
    d = root / split / "frames" / vid
    d.mkdir(parents=True)
    for t in range(n):
        Image.fromarray(np.full((h, w, 3), t * 10, np.uint8)).save(d / f"{t}.jpg" if t % 2 else d / f"{t}.png")
    return d


def test_frame_folders_with_interval_mat(tmp_path):
    root = tmp_path / "ds"
    _frame_folder(root, "training", "01", 5)
    _frame_folder(root, "testing", "01", 12)
    _frame_folder(root, "testing", "02", 6)
    gt = np.empty((1, 2), dtype=object)
    gt[0, 0] = np.array([[2, 10], [4, 11]])  # two intervals [2..4] and [10..11], 1-indexed inclusive
    gt[0, 1] = np.array([[1], [2]])
    savemat(str(root / "ped2.mat"), {"gt": gt})
    assert detect_layout(root) == "frames"
    intervals = read_interval_mat(root / "ped2.mat")
    np.testing.assert_array_equal(intervals[0], [[2, 4], [10, 11]])
    test = read_frame_folders(root, "test")
    # frames are ordered naturally (2 before 10), mixed suffixes are fine
    assert [int(f.stem) for f in test[0].files] == list(range(12))
    np.testing.assert_array_equal(test[0].labels, [0, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 0])
    np.testing.assert_array_equal(test[1].labels, [1, 1, 0, 0, 0, 0])
    assert read_frame_folders(root, "train")[0].labels is None


def test_frame_folders_with_labels_json_and_events(tmp_path):
    root = tmp_path / "ds"
    _frame_folder(root, "training", "a", 3)
    _frame_folder(root, "testing", "a", 4)
    (root / "labels.json").write_text(json.dumps({"videos": {"a": {"labels": [0, 1, 1, 0], "events": [{"type": "too_fast", "start": 1, "end": 2}]}}}))
    v = open_video_dataset(root, "test")[0]
    np.testing.assert_array_equal(v.labels, [0, 1, 1, 0])
    assert list(v.event_types()) == ["", "too_fast", "too_fast", ""]
    samples = list(v.samples((8, 10)))
    assert [s.label for s in samples] == [0, 1, 1, 0]
    assert samples[2].meta["frame_index"] == 2 and samples[2].meta["video_id"] == "a" and samples[2].image.shape == (8, 10, 3)


def test_frames_of_different_sizes_name_the_folder(tmp_path):
    d = _frame_folder(tmp_path / "ds", "training", "01", 2)
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(d / "9.png")
    v = read_frame_folders(tmp_path / "ds", "train")[0]
    with pytest.raises(OddspotError, match="differ in size"):
        v.frames()
    assert v.frames((4, 4)).shape == (3, 4, 4, 3)


def test_label_count_mismatch_is_an_error(tmp_path):
    root = tmp_path / "ds"
    _frame_folder(root, "testing", "a", 4)
    (root / "labels.json").write_text(json.dumps({"videos": {"a": {"labels": [0, 1]}}}))
    with pytest.raises(OddspotError, match="2 frames but the video has 4"):
        _ = open_video_dataset(root, "test")[0].labels


def test_ped2_tif_frames_bmp_masks_and_m_file(tmp_path):
    base = tmp_path / "UCSD_Anomaly_Dataset.v1p2" / "UCSDped2"
    for split, vid, n in (("Train", "Train001", 4), ("Test", "Test001", 5), ("Test", "Test002", 3)):
        d = base / split / vid
        d.mkdir(parents=True)
        for t in range(n):
            Image.fromarray(np.full((12, 18), 100 + t, np.uint8)).save(d / f"{t + 1:03d}.tif")
        (d / "._001.tif").write_bytes(b"macOS resource fork, not an image")
    gt = base / "Test" / "Test001_gt"
    gt.mkdir()
    for t in range(5):
        m = np.zeros((12, 18), np.uint8)
        if t in (1, 2):
            m[3:6, 3:6] = 255
        Image.fromarray(m).save(gt / f"{t + 1:03d}.bmp")
    (base / "Test" / "UCSDped2.m").write_text(
        "TestVideoFile = {};\nTestVideoFile{end+1}.gt_frame = [2:3];\nTestVideoFile{end+1}.gt_frame = [1:1, 3:3];\n"
    )
    root = tmp_path / "UCSD_Anomaly_Dataset.v1p2"
    assert detect_layout(root) == "ped2"
    train = read_ped2(root, "train")
    assert len(train) == 1 and len(train[0]) == 4
    assert train[0].frames().shape == (4, 12, 18, 3)
    test = read_ped2(root, "test")
    np.testing.assert_array_equal(test[0].labels, [0, 1, 1, 0, 0])  # from the bmp masks
    np.testing.assert_array_equal(test[1].labels, [1, 0, 1])  # from the .m intervals


def test_frames_are_cached_on_disk(tmp_path):
    root = tmp_path / "ds"
    _frame_folder(root, "training", "01", 4)
    cache = tmp_path / "cache"
    v = read_frame_folders(root, "train", cache_dir=cache)[0]
    first = v.frames((8, 10))
    assert len(list(cache.glob("*.npy"))) == 1
    again = read_frame_folders(root, "train", cache_dir=cache)[0]
    again.files = []  # decoding would now fail: the frames must come from the cache
    np.testing.assert_array_equal(again.frames((8, 10)), first)


def test_helpers():
    assert parse_size("96x128") == (96, 128)
    with pytest.raises(OddspotError, match="HEIGHTxWIDTH"):
        parse_size("96 by 128")
    np.testing.assert_array_equal(labels_from_intervals([[1, 2], [5, 5]], 6), [1, 1, 0, 0, 1, 0])


def test_generator_layout_labels_and_determinism(tmp_path):
    s1 = generate_video_dataset(tmp_path / "a", seed=3, num_train=1, num_test=3, num_frames=70, size=(48, 64))
    s2 = generate_video_dataset(tmp_path / "b", seed=3, num_train=1, num_test=3, num_frames=70, size=(48, 64))
    assert s1["videos"] == s2["videos"] and s1["seed"] == 3
    train = open_video_dataset(tmp_path / "a", "train")
    test = open_video_dataset(tmp_path / "a", "test")
    assert len(train) == 1 and len(test) == 3 and len(test[0]) == 70
    np.testing.assert_array_equal(train[0].frames(), open_video_dataset(tmp_path / "b", "train")[0].frames())
    kinds = {e["type"] for v in s1["videos"].values() for e in v["events"]}
    assert kinds == set(EVENT_TYPES)
    for v in test:
        labels = v.labels
        assert labels.any() and not labels.all()
        # every labelled frame belongs to an event, and every event frame is labelled
        np.testing.assert_array_equal(labels.astype(bool), v.event_types() != "")
    # the .mat intervals written beside labels.json agree with it
    mat = read_interval_mat(tmp_path / "a" / "gt.mat")
    for v, iv in zip(test, mat):
        np.testing.assert_array_equal(labels_from_intervals(iv, len(v)), v.labels)


def test_open_unlabeled_videos_in_every_shape(tmp_path, avenue_root):
    single = _frame_folder(tmp_path / "one", "x", "cam", 3)
    videos, errors = open_videos(single)
    assert [v.video_id for v in videos] == ["cam"] and errors == [] and videos[0].labels is None
    many = tmp_path / "many"
    many.mkdir()
    for vid, n in (("b", 2), ("a10", 2), ("a2", 3)):
        d = many / vid
        d.mkdir()
        for t in range(n):
            Image.fromarray(np.full((8, 8, 3), t, np.uint8)).save(d / f"{t}.png")
    (many / "no_frames").mkdir()
    (many / ".hidden").mkdir()
    avi = avenue_root / "testing_videos" / "01.avi"
    (many / "clip.avi").write_bytes(avi.read_bytes())
    videos, errors = open_videos(many)
    assert [v.video_id for v in videos] == ["a2", "a10", "b", "clip"]
    assert [e["video"] for e in errors] == ["no_frames"] and "no frame images" in errors[0]["error"]
    assert len(videos[-1].frames()) == 8
    assert [v.video_id for v in open_videos(avi)[0]] == ["01"]
    (many / "b.avi").write_bytes(avi.read_bytes())
    with pytest.raises(OddspotError, match="several entries are named 'b'"):
        open_videos(many)
    with pytest.raises(OddspotError, match="no such file or folder"):
        open_videos(tmp_path / "nowhere")
    with pytest.raises(OddspotError, match="not a video file"):
        open_videos(many / "a2" / "0.png")
