"""Procedural fixed-camera videos for tests and the demo, written in the Avenue-style frame-folder layout.

The scene is a static textured street seen from a fixed camera with two walkways: on the upper
one people walk left to right, on the lower one right to left, at walking speed. Test videos add
anomalous events whose appearance matches normal frames where that makes the point:

- `wrong_direction`: an ordinary pedestrian walking against the flow of its walkway (a single
  frame looks exactly like a normal frame: sprites are left-right symmetric);
- `too_fast`: an ordinary pedestrian running with the flow at about 3.5x walking speed;
- `unseen_object`: a cart of a shape and colour never seen in training, at walking speed.

Output: `training/frames/NN/NNNN.png`, `testing/frames/NN/NNNN.png`, `labels.json` (per video the
per-frame labels and the events, 0-indexed inclusive) and `gt.mat` (per video the 1-indexed
[start; end] intervals, as in the common Avenue/Ped2 repackaging).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from oddspot.configs import check_range
from oddspot.errors import OddspotError
from oddspot.files import write_json, write_png

EVENT_TYPES = ("wrong_direction", "too_fast", "unseen_object")
FORMAT_VERSION = 1
MIN_FRAMES = 60
SHIRTS = np.array([[200, 40, 40], [40, 90, 200], [40, 160, 70], [220, 200, 60], [120, 60, 160], [230, 230, 230]], np.uint8)
PERSON_H, PERSON_W = 14, 6
CART_H, CART_W = 9, 16


@dataclass
class _Agent:
    kind: str  # "person" or "cart"
    lane: int
    x: float
    speed: float  # signed px/frame
    color: np.ndarray
    jitter: int
    event: str = ""
    uid: int = 0


def _background(rng: np.random.Generator, h: int, w: int, lanes: tuple[int, ...]) -> np.ndarray:
    """A static street: textured ground, building blocks at the top, two paved walkways."""
    yy = np.linspace(0, 1, h)[:, None, None]
    base = np.array([95, 100, 90], np.float64) + 40 * yy * np.array([1.0, 0.9, 0.7])
    tex = gaussian_filter(rng.normal(0, 1, (h, w)), 1.5) * 18 + gaussian_filter(rng.normal(0, 1, (h, w)), 6) * 30
    img = base + tex[:, :, None]
    x = 0
    while x < w:
        bw = int(rng.integers(14, 30))
        bh = int(rng.integers(h // 8, h // 4))
        img[:bh, x : x + bw] = rng.integers(60, 180, 3) + tex[:bh, x : x + bw, None] * 0.3
        for wy in range(3, bh - 3, 6):
            img[wy : wy + 2, x + 3 : x + bw - 3 : 5] = (210, 210, 160)
        x += bw + int(rng.integers(0, 6))
    for cy in lanes:
        top, bottom = cy - PERSON_H - 4, cy + 4
        img[top:bottom] = np.array([150, 145, 140]) + tex[top:bottom, :, None] * 0.4
        img[top:bottom, ::9] -= 25
        img[top, :] -= 35
        img[bottom - 1, :] -= 35
    return np.clip(img, 0, 255)


def _person(color: np.ndarray, phase: int) -> tuple[np.ndarray, np.ndarray]:
    """A left-right symmetric pedestrian sprite (RGB, alpha); legs apart or together by `phase`."""
    rgb = np.zeros((PERSON_H, PERSON_W, 3), np.float64)
    alpha = np.zeros((PERSON_H, PERSON_W), bool)
    rgb[0:4, 1:5], alpha[0:4, 1:5] = (225, 180, 150), True
    rgb[4:10, 0:6], alpha[4:10, 0:6] = color, True
    legs = (0, 1, 4, 5) if phase else (1, 2, 3, 4)
    for c in legs:
        rgb[10:14, c], alpha[10:14, c] = (40, 40, 60), True
    return rgb, alpha


def _cart(color: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A symmetric cart: a flat box on two wheels, a shape never seen in training."""
    rgb = np.zeros((CART_H, CART_W, 3), np.float64)
    alpha = np.zeros((CART_H, CART_W), bool)
    rgb[1:6, :], alpha[1:6, :] = color, True
    rgb[0, 2:14], alpha[0, 2:14] = (250, 250, 250), True
    for c0 in (2, 11):
        rgb[6:9, c0 : c0 + 3], alpha[6:9, c0 : c0 + 3] = (20, 20, 20), True
    return rgb, alpha


def _sprite(agent: _Agent) -> tuple[np.ndarray, np.ndarray]:
    if agent.kind == "cart":
        return _cart(agent.color)
    return _person(agent.color, int(abs(agent.x) // 4) % 2)


def _draw(img: np.ndarray, agent: _Agent, lane_y: int) -> int:
    """Paint the agent; return how many of its columns are inside the frame."""
    rgb, alpha = _sprite(agent)
    sh, sw = alpha.shape
    x0 = int(round(agent.x)) - sw // 2
    y0 = lane_y + agent.jitter - sh
    h, w = img.shape[:2]
    xa, xb = max(x0, 0), min(x0 + sw, w)
    if xb <= xa:
        return 0
    region = img[y0 : y0 + sh, xa:xb]
    a = alpha[:, xa - x0 : xb - x0]
    region[a] = rgb[:, xa - x0 : xb - x0][a]
    return xb - xa


def _enter_x(direction: int, w: int, width: int) -> float:
    return -width / 2 if direction > 0 else w + width / 2


def _render_video(
    rng: np.random.Generator,
    background: np.ndarray,
    lanes: tuple[int, ...],
    num_frames: int,
    events: list[tuple[str, int]],
    spawn_rate: float,
    noise: float,
) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Simulate and render one video; `events` are (type, start frame). Returns frames, labels, events."""
    h, w = background.shape[:2]
    directions = (1, -1)
    agents: list[_Agent] = []
    warmup = int(w / 1.2) + 5
    frames = np.zeros((num_frames, h, w, 3), np.uint8)
    labels = np.zeros(num_frames, np.int8)
    seen: dict[int, tuple[str, list[int]]] = {}
    pending = sorted(((warmup + start, kind) for kind, start in events), key=lambda e: e[0])
    for t in range(warmup + num_frames):
        for lane in range(len(lanes)):
            last = [a for a in agents if a.lane == lane and a.speed * directions[lane] > 0]
            clear = all(abs(a.x - _enter_x(directions[lane], w, PERSON_W)) > 14 for a in last)
            if clear and rng.random() < spawn_rate:
                speed = directions[lane] * rng.uniform(1.2, 1.8)
                color = SHIRTS[rng.integers(len(SHIRTS))]
                agents.append(_Agent("person", lane, _enter_x(directions[lane], w, PERSON_W), speed, color, int(rng.integers(-2, 3))))
        while pending and pending[0][0] == t:
            _, kind = pending.pop(0)
            uid = len(events) - len(pending)
            lane = int(rng.integers(len(lanes)))
            d = directions[lane]
            color = SHIRTS[rng.integers(len(SHIRTS))]
            if kind == "wrong_direction":
                agents.append(_Agent("person", lane, _enter_x(-d, w, PERSON_W), -d * rng.uniform(1.4, 1.8), color, 0, kind, uid))
            elif kind == "too_fast":
                agents.append(_Agent("person", lane, _enter_x(d, w, PERSON_W), d * rng.uniform(5.0, 6.0), color, 0, kind, uid))
            else:
                cart_color = np.array([235, 60, 210], np.uint8)
                agents.append(_Agent("cart", lane, _enter_x(d, w, CART_W), d * rng.uniform(1.4, 1.8), cart_color, 0, kind, uid))
        if t >= warmup:
            i = t - warmup
            img = background.copy()
            for agent in sorted(agents, key=lambda a: lanes[a.lane] + a.jitter):
                visible = _draw(img, agent, lanes[agent.lane])
                if agent.event and visible >= 3:
                    labels[i] = 1
                    seen.setdefault(agent.uid, (agent.event, []))[1].append(i)
            img += rng.normal(0, noise, img.shape)
            frames[i] = np.clip(np.round(img), 0, 255).astype(np.uint8)
        for agent in agents:
            agent.x += agent.speed
        agents = [a for a in agents if -20 < a.x < w + 20]
    event_list = [{"type": kind, "start": min(ts), "end": max(ts)} for kind, ts in seen.values()]
    return frames, labels, sorted(event_list, key=lambda e: e["start"])


def generate_video_dataset(
    out_dir: str | Path,
    seed: int = 0,
    num_train: int = 4,
    num_test: int = 6,
    num_frames: int = 200,
    size: tuple[int, int] = (96, 128),
    spawn_rate: float = 0.035,
    noise: float = 2.0,
) -> dict:
    """Write a synthetic fixed-camera dataset under `out_dir`; return its summary (also in labels.json).

    Needs at least one training and one test video of at least 60 frames (room for two events).

    Each test video holds two events of different types, spread so that over the test set every
    type occurs about equally often. Frames are labelled anomalous while an event's object has at
    least 3 columns inside the frame.
    """
    from scipy.io import savemat

    check_range("num_train", num_train, 1, 1000)
    check_range("num_test", num_test, 1, 1000)
    check_range("num_frames", num_frames, MIN_FRAMES, 100_000)
    if len(size) != 2:
        raise OddspotError(f"size {size} must be (height, width)")
    for side in size:
        check_range("size", side, 32, 4096)
    check_range("seed", seed, 0, 2**32 - 1)
    check_range("spawn_rate", spawn_rate, 0.0, 1.0, low_open=True)
    check_range("noise", noise, 0.0, 100.0)
    out = Path(out_dir)
    h, w = size
    rng = np.random.default_rng(seed)
    lanes = (int(h * 0.45), int(h * 0.78))
    background = _background(rng, h, w, lanes)
    for i in range(num_train):
        frames, _, _ = _render_video(rng, background, lanes, num_frames, [], spawn_rate, noise)
        for t, frame in enumerate(frames):
            write_png(out / "training" / "frames" / f"{i + 1:02d}" / f"{t:04d}.png", frame)
    videos: dict[str, dict] = {}
    intervals = np.empty((1, num_test), dtype=object)
    for i in range(num_test):
        first = EVENT_TYPES[i % 3]
        second = EVENT_TYPES[(i + 1 + (i // 3)) % 3]
        if second == first:
            second = EVENT_TYPES[(i + 2) % 3]
        start1 = int(rng.integers(10, max(11, num_frames // 6)))
        gap = int(w / 1.4) + int(rng.integers(15, 30))
        start2 = min(start1 + gap, num_frames - 40)
        frames, labels, events = _render_video(rng, background, lanes, num_frames, [(first, start1), (second, start2)], spawn_rate, noise)
        vid = f"{i + 1:02d}"
        for t, frame in enumerate(frames):
            write_png(out / "testing" / "frames" / vid / f"{t:04d}.png", frame)
        videos[vid] = {"num_frames": num_frames, "labels": labels.tolist(), "events": events}
        runs = _runs(labels)
        intervals[0, i] = (np.array(runs, dtype=np.float64).T + 1) if runs else np.zeros((2, 0))
    summary = {
        "format_version": FORMAT_VERSION,
        "generator": "oddspot.data.synthetic_video",
        "seed": seed,
        "size": [h, w],
        "num_frames": num_frames,
        "index_base": 0,
        "event_types": list(EVENT_TYPES),
        "videos": videos,
    }
    write_json(out / "labels.json", summary)
    savemat(str(out / "gt.mat"), {"gt": intervals})
    return summary


def _runs(labels: np.ndarray) -> list[tuple[int, int]]:
    """Inclusive [start, end] runs of ones (0-indexed)."""
    padded = np.concatenate([[0], labels.astype(np.int8), [0]])
    d = np.diff(padded)
    return list(zip(np.flatnonzero(d == 1).tolist(), (np.flatnonzero(d == -1) - 1).tolist()))
