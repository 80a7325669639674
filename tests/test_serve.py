"""`oddspot serve`: endpoints, scores identical to `oddspot predict`, micro-batching, every error status, the token.

The service runs in this process on 127.0.0.1 (uvicorn on a thread, a real socket). Queueing,
batching and timeouts are checked with a model whose calls wait on a gate the test opens, so
nothing depends on timing.
"""

from __future__ import annotations

import re

import base64
import csv
import io
import json
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from oddspot.cli import cli
from oddspot.data.image_io import DECODE_PIXELS, list_images, read_image
from oddspot.errors import OddspotError
from oddspot.runs.prediction import Prediction
from oddspot.serve.decode import UnsupportedImage, decode_image_bytes
from oddspot.serve.models import ServedModel, load_served, parse_spec
from oddspot.serve.schemas import ModelList, PredictAnswer
from oddspot.serve.server import BackgroundServer
from oddspot.serve.settings import ServeSettings

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PREDICT = "/v1/models/brick/predict"
ROOT = Path(__file__).resolve().parents[1]


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG header announcing width x height, with no pixel data: only a header check refuses it as too large."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def read_scores(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as fh:
        return {row["path"]: row for row in csv.DictReader(fh)}


def wait_ready(client: httpx.Client, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "the service never became ready"
        time.sleep(0.05)


def wait_until(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def metric(text: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


# --- a real model, and `oddspot predict` on the same images -------------------------------------------

@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A tiny calibrated PatchCore saved as RUN/brick, its test images, and `oddspot predict`'s outputs for them."""
    from model_cases import inspect_patchcore

    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("serve")
    case = inspect_patchcore(tmp)
    run = tmp / "brick"
    case.model.save(run)
    test = case.data / "brick" / "test"
    out = tmp / "predicted"
    result = CliRunner().invoke(cli, ["predict", str(run), str(test), "-o", str(out), "--threads", "1", "--save-maps",
                                  "--runtime", "torch"])
    assert result.exit_code == 0, result.output
    images = list_images(test, recursive=True)
    return SimpleNamespace(run=run, test=test, out=out, images=images, scores=read_scores(out / "scores.csv"))


@pytest.fixture(scope="module")
def service(fitted):
    """The real model behind a token, with small body and image limits."""
    settings = ServeSettings(port=0, token=TOKEN, max_body_bytes=256 * 1024, max_images=8, max_pixels=100_000)
    server = BackgroundServer([load_served(f"brick={fitted.run}", runtime="torch", device="cpu")], settings)
    with server as url, httpx.Client(base_url=url, headers=AUTH, timeout=60) as client:
        wait_ready(client)
        yield SimpleNamespace(url=url, client=client, server=server)


def test_health_ready_models_docs_and_page(service, fitted):
    c = service.client
    assert c.get("/healthz").json() == {"status": "ok"}
    ready = c.get("/readyz")
    assert ready.status_code == 200 and ready.json()["models"] == {"brick": "ready"}
    listed = ModelList.model_validate(c.get("/v1/models").json()).models
    assert [m.name for m in listed] == ["brick"]
    info = listed[0]
    from oddspot.runs.registry import load_model

    model = load_model(fitted.run, device="cpu")
    assert (info.task, info.kind, info.input_size, info.calibrated) == ("inspect", "patchcore", [64, 64], True)
    assert info.thresholds.image == model.postprocess.image_threshold
    assert info.thresholds.pixel == model.postprocess.pixel_threshold
    assert len(info.version) == 12 and c.get("/v1/models/brick").json()["version"] == info.version
    schema = c.get("/openapi.json").json()
    assert "/v1/models/{name}/predict" in schema["paths"] and "PredictAnswer" in schema["components"]["schemas"]
    docs = c.get("/docs")
    assert docs.status_code == 200 and "cdn" not in docs.text.lower()  # works offline: nothing from a CDN
    sources = re.findall(r'(?:src|href)="([^"]+)"', docs.text) + re.findall(r"url: '([^']+)'", docs.text)
    assert len(sources) >= 4 and all(u.startswith("/") for u in sources), sources
    for u in sources:
        assert c.get(u).status_code == 200 and len(c.get(u).content) > 100, u
    page = c.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert "http" not in page.text.replace(page.url.host, "")  # nothing from elsewhere: no CDN
    for name in ("app.js", "app.css"):
        asset = c.get(f"/static/{name}")
        assert asset.status_code == 200 and len(asset.content) > 500
        assert "http://" not in asset.text and "https://" not in asset.text
    assert c.get("/static/secret.txt").status_code == 404


def test_scores_are_identical_to_predict(service, fitted):
    """One multipart request with every image, then each image alone as a raw body: the floats of scores.csv."""
    c = service.client
    files = [("image", (p.name, p.read_bytes(), "image/png")) for p in fitted.images]
    answer = c.post(PREDICT, files=files)
    assert answer.status_code == 200, answer.text
    body = PredictAnswer.model_validate(answer.json())
    assert (body.model, body.task, body.kind, body.runtime) == ("brick", "inspect", "patchcore", "torch")
    assert len(body.results) == len(fitted.images) >= 5
    for path, result in zip(fitted.images, body.results):
        row = fitted.scores[str(path)]
        assert result.score == float(row["score"]) and result.normalized == float(row["normalized"])
        assert result.decision == ("anomalous" if row["anomalous"] == "1" else "normal")
        assert result.name == path.name and result.status == 200 and result.heatmap is None
        assert result.timing_ms.batch_size >= 1
    assert {r.decision for r in body.results} == {"anomalous", "normal"}  # the check can tell them apart
    for path in fitted.images:
        alone = c.post(PREDICT, content=path.read_bytes(), headers={"content-type": "image/png"}).json()
        assert alone["results"][0]["score"] == float(fitted.scores[str(path)]["score"])
        assert alone["results"][0]["name"] is None


def test_outputs_are_predicts_heatmap_mask_and_map(service, fitted):
    c = service.client
    for path in fitted.images[:3]:
        rel = path.relative_to(fitted.test)
        got = c.post(PREDICT, params={"outputs": "heatmap,mask,map"},
                     files={"image": (path.name, path.read_bytes(), "image/png")}).json()["results"][0]
        heatmap = np.asarray(Image.open(io.BytesIO(base64.b64decode(got["heatmap"]))))
        mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(got["mask"]))))
        amap = np.load(io.BytesIO(base64.b64decode(got["map"])), allow_pickle=False)
        assert np.array_equal(heatmap, np.asarray(Image.open(fitted.out / "heatmaps" / f"{rel}.png")))
        assert np.array_equal(mask, np.asarray(Image.open(fitted.out / "masks" / f"{rel}.png")))
        assert np.array_equal(amap, np.load(fitted.out / "maps" / f"{rel}.npy"))
        assert heatmap.shape == (*read_image(path).shape[:2], 3) and amap.dtype == np.float32
    assert c.post(PREDICT, params={"outputs": "heatmap,banana"}, content=b"x",
                  headers={"content-type": "image/png"}).json()["error"].startswith("outputs: 'banana' unknown")


def test_token_is_required_where_it_matters(service):
    url = service.url
    image = png_bytes(np.zeros((64, 64, 3), np.uint8))
    with httpx.Client(base_url=url, timeout=60) as anonymous:
        for method, path in (("GET", "/v1/models"), ("GET", "/metrics"), ("POST", PREDICT)):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
                r = anonymous.request(method, path, headers={**headers, "content-type": "image/png"}, content=image)
                assert r.status_code == 401, (path, headers)
                assert r.json()["error"].startswith("missing or wrong bearer token")
                assert r.headers["www-authenticate"].startswith("Bearer")
        assert anonymous.get("/healthz").status_code == 200 and anonymous.get("/").status_code == 200
        ok = anonymous.post(PREDICT, headers={**AUTH, "content-type": "image/png"}, content=image)
        assert ok.status_code == 200  # the control: the same request with the token


def test_other_web_sites_are_refused(service, fitted):
    """DNS rebinding (a foreign Host on a loopback service) and cross-site form posts (a foreign Origin) get 403."""
    c, image = service.client, fitted.images[0].read_bytes()
    port = service.url.rsplit(":", 1)[1]
    headers = {"content-type": "image/png"}
    rebound = c.post(PREDICT, content=image, headers={**headers, "host": f"evil.example:{port}"})
    assert rebound.status_code == 403 and "answers to 127.0.0.1 and localhost only" in rebound.json()["error"]
    assert c.get("/", headers={"host": "evil.example"}).status_code == 403
    posted = c.post(PREDICT, content=image, headers={**headers, "origin": "http://evil.example"})
    assert posted.status_code == 403 and "cross-origin request" in posted.json()["error"]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}"):  # the controls: this service's own names and origin
        ok = c.post(PREDICT, content=image, headers={**headers, "host": host, "origin": f"http://{host}"})
        assert ok.status_code == 200, ok.text
    text = c.get("/metrics").text
    assert metric(text, "oddspot_requests_total", route="other", status="403") >= 3


def test_error_statuses(service, fitted):
    c = service.client
    good = fitted.images[0].read_bytes()

    def post(content=None, content_type="image/png", **kw):
        return c.post(PREDICT, content=content, headers={"content-type": content_type}, **kw)

    cases = [
        (c.post("/v1/models/bottle/predict", content=good, headers={"content-type": "image/png"}), 404, "model 'bottle' unknown"),
        (c.post("/v1/models/%2Fetc%2Fpasswd/predict", content=good, headers={"content-type": "image/png"}), 404, ""),
        (c.get("/v1/nothing"), 404, "no such endpoint"),
        (c.get(PREDICT), 405, "GET is not allowed"),
        (post(good, "application/json"), 415, "Content-Type 'application/json'"),
        (post(b"GIF89a not really", "image/png"), 415, "not a PNG, JPEG, BMP, TIFF or WebP image"),
        (post(good[: len(good) // 2]), 400, "cannot decode the image"),
        (post(png_header_only(20_000, 20_000)), 400, "over the pixel budget"),  # PIL's own bomb limit, caught
        (post(png_header_only(400, 400)), 400, "over the pixel budget of 0.1 Mpx"),
        (post(b"\0" * (300 * 1024)), 413, "request body over the limit"),
        (post(iter([b"\0" * 65536] * 5)), 413, "request body over the limit"),  # chunked, no Content-Length
        (c.post(PREDICT, files=[("image", (f"{i}.png", good, "image/png")) for i in range(9)]), 400, "at most 8 files"),
        (c.post(PREDICT, files={"note": (None, "hello")}), 400, "no image in the request"),
        (post(b""), 400, "no image in the request"),
    ]
    for response, status, message in cases:
        assert response.status_code == status, (status, message, response.text)
        assert list(response.json()) == ["error"] and message in response.json()["error"], response.json()
        assert "\n" not in response.json()["error"]
    assert post(good).status_code == 200  # the control: after all of that, the service still scores


def test_one_bad_image_in_a_request_is_reported_and_the_others_scored(service, fitted):
    c = service.client
    good = fitted.images[0]
    files = [("image", ("good.png", good.read_bytes(), "image/png")), ("image", ("bad.png", b"garbage", "image/png")),
             ("image", ("big.png", png_header_only(400, 400), "image/png"))]
    body = PredictAnswer.model_validate(c.post(PREDICT, files=files).json()).model_dump()
    first, bad, big = body["results"]
    assert first["status"] == 200 and first["score"] == float(fitted.scores[str(good)]["score"])
    assert bad["status"] == 415 and bad["score"] is None and "bad.png" in bad["error"]
    assert big["status"] == 400 and "pixel budget" in big["error"]
    none = c.post(PREDICT, files=files[1:])
    assert none.status_code == 415 and none.json()["error"].startswith("none of the 2 images could be scored")


def test_metrics_count_requests_batches_and_queue(service, fitted):
    c = service.client
    before = c.get("/metrics").text
    image = fitted.images[0].read_bytes()
    for _ in range(3):
        assert c.post(PREDICT, content=image, headers={"content-type": "image/png"}).status_code == 200
    assert c.post("/v1/models/bottle/predict", content=image, headers={"content-type": "image/png"}).status_code == 404
    after = c.get("/metrics")
    assert after.headers["content-type"].startswith("text/plain")
    route = "/v1/models/{name}/predict"

    def grew(name: str, **labels: str) -> float:
        return metric(after.text, name, **labels) - metric(before, name, **labels)

    assert grew("oddspot_requests_total", route=route, status="200") == 3
    assert grew("oddspot_requests_total", route=route, status="404") == 1
    assert grew("oddspot_request_seconds_count", route=route) == 4
    assert grew("oddspot_batch_size_count", model="brick") == 3 and grew("oddspot_images_total", model="brick") == 3
    assert "oddspot_queue_depth" in after.text and metric(after.text, "oddspot_queue_depth", model="brick") == 0
    assert metric(after.text, "oddspot_requests_total", route="other") == metric(before, "oddspot_requests_total", route="other")


# --- a model whose calls wait on a gate: queueing, batching, shedding and timeouts ------------------

class GatedModel:
    """Scores an image by its mean; each call waits until the test opens the gate."""

    task, kind, runtime = "inspect", "patchcore", "torch"

    def __init__(self) -> None:
        self.config = SimpleNamespace(image_size=32)
        self.state: dict = {}
        self.postprocess = None
        self.gate = threading.Event()
        self.gate.set()
        self.calls: list[int] = []
        self.broken = False

    def predict(self, images, maps=True):
        self.calls.append(len(images))
        assert self.gate.wait(30), "the test never opened the gate"
        if self.broken:
            raise RuntimeError("no weights")
        if any(im.shape[0] == 13 for im in images):
            raise RuntimeError("this model cannot score 13-pixel-high images")
        return Prediction(np.array([float(im.mean()) for im in images]),
                          [np.zeros(im.shape[:2], np.float32) for im in images] if maps else None)


@pytest.fixture
def gated():
    """A service of one gated model: (client, model, batcher, start(settings))."""
    servers = []

    def start(model: GatedModel | None = None, wait: bool = True, **options):
        model = model or GatedModel()
        server = BackgroundServer([ServedModel("brick", Path("gated"), model, "0" * 12, "test")],
                                  ServeSettings(port=0, max_wait_ms=0, **options))
        url = server.start()
        servers.append(server)
        client = httpx.Client(base_url=url, timeout=30)
        if wait:
            wait_ready(client)
        return client, model, server.app.state.service.batchers["brick"]

    yield start
    for server in servers:
        for m in server.app.state.service.models.values():
            m.model.gate.set()
        server.stop()


def _post_in_thread(client: httpx.Client, value: int, answers: dict) -> threading.Thread:
    image = png_bytes(np.full((16, 16, 3), value, np.uint8))

    def run() -> None:
        answers[value] = client.post(PREDICT, content=image, headers={"content-type": "image/png"})

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_queued_images_are_scored_in_one_batch(gated):
    client, model, batcher = gated(max_batch=8)
    model.gate.clear()
    answers: dict = {}
    threads = [_post_in_thread(client, 10, answers)]
    wait_until(lambda: model.calls[-1:] == [1] and len(model.calls) == 2)  # warm-up, then the first image, waiting
    threads += [_post_in_thread(client, v, answers) for v in (20, 30, 40, 50)]
    wait_until(lambda: batcher.depth == 4)
    model.gate.set()
    for t in threads:
        t.join(30)
    assert model.calls[1:] == [1, 4]
    for value in (10, 20, 30, 40, 50):
        result = answers[value].json()["results"][0]
        assert result["score"] == value  # each image got its own score back
        assert result["timing_ms"]["batch_size"] == (1 if value == 10 else 4)
    text = client.get("/metrics").text
    assert metric(text, "oddspot_batch_size_bucket", model="brick", le="4.0") - \
        metric(text, "oddspot_batch_size_bucket", model="brick", le="2.0") == 1


def test_full_queue_sheds_with_503_and_retry_after(gated):
    client, model, batcher = gated(queue=1, max_batch=1)
    model.gate.clear()
    answers: dict = {}
    first = _post_in_thread(client, 10, answers)
    wait_until(lambda: len(model.calls) == 2)
    second = _post_in_thread(client, 20, answers)
    wait_until(lambda: batcher.depth == 1)
    shed = client.post(PREDICT, content=png_bytes(np.zeros((16, 16, 3), np.uint8)), headers={"content-type": "image/png"})
    assert shed.status_code == 503 and "queue is full" in shed.json()["error"]
    assert int(shed.headers["retry-after"]) >= 1
    model.gate.set()
    first.join(30)
    second.join(30)
    assert answers[10].status_code == answers[20].status_code == 200  # shedding refused only what did not fit
    assert client.post(PREDICT, content=png_bytes(np.zeros((16, 16, 3), np.uint8)),
                       headers={"content-type": "image/png"}).status_code == 200


def test_slow_answers_time_out_with_504_and_are_not_scored(gated):
    client, model, batcher = gated(timeout_s=0.3, max_batch=1)
    model.gate.clear()
    answers: dict = {}
    first = _post_in_thread(client, 10, answers)
    wait_until(lambda: len(model.calls) == 2)
    started = time.monotonic()
    late = client.post(PREDICT, content=png_bytes(np.zeros((16, 16, 3), np.uint8)), headers={"content-type": "image/png"})
    assert late.status_code == 504 and "not answered within 0.3 s" in late.json()["error"]
    assert time.monotonic() - started < 5
    first.join(30)
    assert answers[10].status_code == 504
    model.gate.set()
    wait_until(lambda: batcher.depth == 0)
    time.sleep(0.1)
    assert model.calls[1:] == [1]  # the image that gave up while queued was never scored


def test_an_image_that_breaks_the_model_fails_alone(gated):
    client, model, batcher = gated(max_batch=8)
    files = [("image", ("a.png", png_bytes(np.full((16, 16, 3), 7, np.uint8)), "image/png")),
             ("image", ("b.png", png_bytes(np.zeros((13, 16, 3), np.uint8)), "image/png"))]
    body = PredictAnswer.model_validate(client.post(PREDICT, files=files).json()).model_dump()
    assert body["results"][0]["score"] == 7
    assert body["results"][1]["status"] == 500 and "scoring failed (RuntimeError)" in body["results"][1]["error"]
    assert model.calls[1:] == [2, 1, 1]  # the batch failed, then each image alone


def test_ready_only_after_warm_up_and_not_after_a_failed_one(gated):
    warming = GatedModel()
    warming.gate.clear()
    client, _, _ = gated(model=warming, wait=False)
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["error"] == "not ready (brick: warming up)"
    assert client.get("/healthz").status_code == 200
    warming.gate.set()
    wait_ready(client)  # the control: ready once warmed up
    broken = GatedModel()
    broken.broken = True
    client, _, _ = gated(model=broken, wait=False)
    wait_until(lambda: "warm-up failed" in client.get("/readyz").text)
    ready = client.get("/readyz")
    assert ready.status_code == 503 and "brick: warm-up failed: no weights" in ready.json()["error"]


def test_batcher_queue_is_bounded_in_images_and_pixels():
    from oddspot.serve.batching import MicroBatcher, QueueFull

    gate = threading.Event()

    def infer(images, maps):
        gate.wait(30)
        return [float(im.sum()) for im in images]

    batcher = MicroBatcher(infer, max_batch=1, max_wait=0, capacity=3, max_pixels=300)
    try:
        first = batcher.submit([np.ones((10, 10, 3), np.uint8)], maps=False)  # taken at once; the thread waits
        wait_until(lambda: batcher.depth == 0)
        queued = batcher.submit([np.ones((10, 10, 3), np.uint8)] * 2, maps=False)
        with pytest.raises(QueueFull, match="queue is full"):  # 3 + 2 images > capacity: none of them is queued
            batcher.submit([np.ones((10, 10, 3), np.uint8)] * 2, maps=False)
        with pytest.raises(QueueFull) as shed:  # 200 + 200 pixels > 300
            batcher.submit([np.ones((10, 20, 3), np.uint8)], maps=False)
        assert shed.value.retry_after >= 1 and batcher.depth == 2
        gate.set()
        assert [f.result(30)[0] for f in first + queued] == [300.0] * 3
        assert first[0].result()[1].batch_size == 1
        big = batcher.submit([np.ones((30, 30, 3), np.uint8)], maps=False)  # over the pixel cap, but alone: taken
        assert big[0].result(30)[0] == 2700.0
    finally:
        gate.set()
        batcher.stop()
    with pytest.raises(OddspotError, match="shutting down"):
        batcher.submit([np.ones((4, 4, 3), np.uint8)], maps=False)


# --- road models ------------------------------------------------------------------------------------

def test_road_model_returns_map_summary_and_predicts_scores(tmp_path):
    from model_cases import road_deeplabv3plus

    torch.set_num_threads(1)
    case = road_deeplabv3plus(tmp_path)
    run = tmp_path / "streets-run"
    case.model.save(run)
    images = list_images(case.data / "test" / "images", recursive=True)
    out = tmp_path / "road-predicted"
    done = CliRunner().invoke(cli, ["road", "predict", str(run), *map(str, images), "-o", str(out), "--threads", "1",
                                    "--runtime", "torch",
                                    "--no-panels"])
    assert done.exit_code == 0, done.output
    rows = read_scores(out / "scores.csv")
    with BackgroundServer([load_served(str(run), runtime="torch", device="cpu")]) as url, \
            httpx.Client(base_url=url, timeout=60) as client:
        info = client.get("/v1/models").json()["models"][0]
        assert (info["name"], info["task"], info["thresholds"]["score"]) == ("streets-run", "road", "fusion")
        for path in images:
            body = client.post("/v1/models/streets-run/predict", params={"outputs": "heatmap,map"},
                               content=path.read_bytes(), headers={"content-type": "image/png"}).json()
            result = body["results"][0]
            row = rows[str(path)]
            assert result["score"] == float(row["score"])
            assert result["summary"]["flagged_pixels"] == int(row["flagged_pixels"])
            assert result["summary"]["pixel_threshold"] == body["thresholds"]["pixel"]
            amap = np.load(io.BytesIO(base64.b64decode(result["map"])))
            assert amap.shape == read_image(path).shape[:2]
            assert int((amap >= body["thresholds"]["pixel"]).sum()) == result["summary"]["flagged_pixels"]


# --- the bounded load test, short -------------------------------------------------------------------

@pytest.mark.slow
def test_load_200_concurrent_requests_all_answered_with_predicts_scores(fitted, tmp_path):
    """`benchmarks/serve_load.py` against `oddspot serve` in its own process: 4 clients, 200 requests."""
    report = tmp_path / "load.json"
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "serve_load.py"), str(fitted.run),
                          "--images", str(fitted.test), "--clients", "4", "--requests", "200", "--seconds", "300",
                          "--warmup", "8", "--threads", "1", "--runtime", "torch", "--max-wait-ms", "2", "--no-compare",
                          "--json", str(report)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    result = json.loads(report.read_text())
    assert result["requests"] == 200 and result["statuses"] == {"200": 200}, result["statuses"]
    expected = {path: float(row["score"]) for path, row in fitted.scores.items()}
    assert result["scores"] == {path: [score] for path, score in expected.items()}
    assert len(set(expected.values())) == len(expected) >= 5  # distinct images: a mix-up would show
    assert result["mean_batch"] > 1  # concurrent requests shared model calls
    assert "every image got one score on every request" in res.stdout


# --- pieces and the command line -------------------------------------------------------------------

def test_decode_matches_read_image_and_checks_the_header(fitted, tmp_path):
    path = fitted.images[0]
    assert np.array_equal(decode_image_bytes(path.read_bytes(), 10**6), read_image(path))
    ramp = (np.arange(6000) % 251).astype(np.uint8)
    big = np.broadcast_to(ramp[None, :, None], (3000, 6000, 3)).copy()  # 18 Mpx: reduced by 2 per side, as predict does
    big[::7] = 40
    for fmt in ("PNG", "JPEG"):
        file = tmp_path / f"big.{fmt.lower()}"
        Image.fromarray(big).save(file, format=fmt)
        decoded = decode_image_bytes(file.read_bytes(), 10**8)
        assert decoded.shape == (1500, 3000, 3)
        assert np.array_equal(decoded, read_image(file, reduce_to=DECODE_PIXELS))
    with pytest.raises(UnsupportedImage):
        decode_image_bytes(b"%PDF-1.4", 10**6)
    with pytest.raises(OddspotError, match="over the pixel budget of 1 Mpx"):
        decode_image_bytes(png_header_only(2000, 1000), 10**6)
    assert decode_image_bytes(png_bytes(np.zeros((1000, 1000, 3), np.uint8)), 10**6).shape == (1000, 1000, 3)


def test_model_names_and_refused_runs(fitted, tmp_path):
    assert parse_spec(f"line-1={fitted.run}") == ("line-1", fitted.run)
    assert parse_spec(str(fitted.run)) == ("brick", fitted.run)
    with pytest.raises(OddspotError, match="cannot name a model"):
        parse_spec(str(tmp_path / "bad name!"))
    video = tmp_path / "clip"
    shutil.copytree(fitted.run, video)
    meta = (video / "model.json").read_text()
    (video / "model.json").write_text(meta.replace('"task": "inspect"', '"task": "video"', 1))
    with pytest.raises(OddspotError, match="a video model; `oddspot serve` serves inspect and road models"):
        load_served(str(video))
    with pytest.raises(OddspotError, match="no such run folder"):
        load_served(str(tmp_path / "missing"))
    model = load_served(str(fitted.run), runtime="torch", device="cpu")
    from oddspot.serve.app import create_app

    with pytest.raises(OddspotError, match="both named 'brick'"):
        create_app([model, model])


def _one_line_error(result, *parts: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for part in parts:
        assert part in lines[0], lines[0]


def test_cli_errors_are_one_line(fitted, monkeypatch, tmp_path):
    runner = CliRunner()
    monkeypatch.delenv("ODDSPOT_TEST_NO_TOKEN", raising=False)
    _one_line_error(runner.invoke(cli, ["serve", str(fitted.run), "--token-env", "ODDSPOT_TEST_NO_TOKEN"]),
                    "--token-env ODDSPOT_TEST_NO_TOKEN", "not set")
    _one_line_error(runner.invoke(cli, ["serve", str(tmp_path / "nothing"), "--port", "0"]), "no such run folder")
    _one_line_error(runner.invoke(cli, ["serve", str(fitted.run), "--max-batch", "0"]), "--max-batch")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        _one_line_error(runner.invoke(cli, ["serve", str(fitted.run), "--port", str(port)]), f"--port {port}", "cannot listen")

    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "fastapi" else real(name, *a))
    _one_line_error(runner.invoke(cli, ["serve", str(fitted.run)]), "pip install 'oddspot[serve]'")


def test_cli_help_does_not_import_the_server():
    code = ("import sys; from oddspot.cli import cli; "
            "print(sorted(m for m in ('fastapi', 'uvicorn', 'prometheus_client', 'oddspot.serve.app') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
