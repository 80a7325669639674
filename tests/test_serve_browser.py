"""The page at `/` in headless Chromium: upload an image through the file input, see the verdict,
the heatmap and the mask, with no console error and no request leaving the service.

Chromium is driven over the DevTools protocol by the small client below (a websocket over a plain
socket: no Playwright). A control page with a script error and no upload handler shows that the
same check fails. With ODDSPOT_SCREENSHOT_DIR set, the page after the upload is saved there as serve.png.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from browser import chromium

pytestmark = [pytest.mark.browser, pytest.mark.slow]

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--disable-extensions", "--disable-sync",
         "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0"]



class DevTools:
    """A DevTools-protocol session with one page target: commands, and the events seen meanwhile."""

    def __init__(self, ws_url: str, timeout: float = 60.0) -> None:
        url = urllib.parse.urlparse(ws_url)
        self.sock = socket.create_connection((url.hostname, url.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {url.path} HTTP/1.1\r\nHost: {url.hostname}:{url.port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        self.buf = bytearray()
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, _, rest = bytes(self.buf).partition(b"\r\n\r\n")
        assert b" 101 " in head.split(b"\r\n", 1)[0], head[:200]
        self.buf = bytearray(rest)
        self.last_id = 0
        self.events: list[dict[str, Any]] = []

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("chromium closed the DevTools connection")
        self.buf += chunk

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def _send(self, payload: bytes, opcode: int = 1) -> None:
        n = len(payload)
        head = bytes([0x80 | opcode])
        head += bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n) if n < 65536 else \
            bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        keys = (mask * (n // 4 + 1))[:n]
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes(keys, "big")).to_bytes(n, "big") if n else b""
        self.sock.sendall(head + mask + masked)

    def _message(self) -> dict[str, Any]:
        parts = []
        while True:
            b0, b1 = self._take(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._take(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._take(8))[0]
            mask = self._take(4) if b1 & 0x80 else None
            data = self._take(n)
            if mask is not None:
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
            opcode = b0 & 0x0F
            if opcode == 0x9:  # ping
                self._send(data, 0xA)
            elif opcode == 0x8:
                raise ConnectionError("chromium closed the DevTools connection")
            elif opcode in (0x0, 0x1, 0x2):
                parts.append(data)
                if b0 & 0x80:
                    return json.loads(b"".join(parts))

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.last_id += 1
        wanted = self.last_id
        self._send(json.dumps({"id": wanted, "method": method, "params": params}).encode())
        while True:
            msg = self._message()
            if msg.get("id") == wanted:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"evaluate failed: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float) -> Any:
        """The expression's value once truthy, or its last value after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value or time.monotonic() > deadline:
                return value
            time.sleep(0.1)

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and failed loads reported so far."""
        out = []
        for e in self.events:
            p = e.get("params", {})
            if e["method"] == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                out.append(f"exception: {d.get('exception', {}).get('description') or d.get('text')}")
            elif e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console.error: " + " ".join(str(a.get("value", a.get("description"))) for a in p.get("args", [])))
            elif e["method"] == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
        return out


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium with its DevTools endpoint on a free port of 127.0.0.1."""
    binary = chromium()
    profile = tmp_path_factory.mktemp("chromium-profile")
    proc = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().strip()):
            assert proc.poll() is None and time.monotonic() < deadline, "chromium did not open its DevTools port"
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _page(port: int) -> DevTools:
    """A fresh page target, with console, exceptions and the log reported."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/json/new?about:blank", method="PUT")
    with urllib.request.urlopen(request, timeout=30) as res:
        target = json.loads(res.read())
    tools = DevTools(target["webSocketDebuggerUrl"])
    for domain in ("Page", "Runtime", "Log", "DOM"):
        tools.call(f"{domain}.enable")
    tools.call("Emulation.setDeviceMetricsOverride", width=1280, height=1000, deviceScaleFactor=1, mobile=False)
    return tools


STATE = """(() => {
  const card = document.querySelector('.result');
  const img = (cls) => { const i = card && card.querySelector('img.' + cls);
    return i ? {ok: i.complete && i.naturalWidth > 0, width: i.naturalWidth, height: i.naturalHeight} : null; };
  const verdict = card && card.querySelector('.verdict');
  return {state: card ? card.dataset.state : null, verdict: verdict ? verdict.textContent : null,
          score: card ? card.dataset.score || null : null,
          line: card && card.querySelector('.score') ? card.querySelector('.score').textContent : null,
          error: card && card.querySelector('.error') ? card.querySelector('.error').textContent : null,
          original: img('original'), heatmap: img('heatmap'), mask: img('mask'),
          history: document.querySelectorAll('#history tbody tr').length,
          resources: performance.getEntriesByType('resource').map(r => r.name)};
})()"""


def inspect_in_page(port: int, url: str, image: Path, wait: float) -> dict[str, Any]:
    """Open `url`, pick `image` in its file input, and report what the page shows, with the errors seen."""
    tools = _page(port)
    tools.call("Page.navigate", url=url)
    tools.wait_for("document.readyState === 'complete'", 30)
    tools.wait_for("document.querySelector('#model option') !== null", 10)
    root = tools.call("DOM.getDocument", depth=1)["root"]["nodeId"]
    node = tools.call("DOM.querySelector", nodeId=root, selector="input[type=file]")["nodeId"]
    if node:
        tools.call("DOM.setFileInputFiles", files=[str(image)], nodeId=node)
    tools.wait_for("(() => { const c = document.querySelector('.result'); return !!c && c.dataset.state !== 'pending' &&"
                   " Array.from(c.querySelectorAll('img')).every(i => i.complete); })()", wait)
    time.sleep(0.2)  # late errors, if any
    state = tools.evaluate(STATE)
    state["errors"] = tools.errors()
    state["tools"] = tools
    return state


def test_page_shows_verdict_heatmap_and_mask(browser, served, tmp_path):
    url, images, answers = served
    image = images[0]  # a defective tile: the model flags it
    control_page = tmp_path / "control.html"
    control_page.write_text('<!DOCTYPE html><html><head><meta charset="utf-8"><link rel="icon" href="data:,"></head><body>'
                            '<select id="model"><option>x</option></select><input id="file-input" type="file">'
                            '<script>console.error("boom"); undefinedFunction();</script></body></html>')
    control = inspect_in_page(browser, control_page.as_uri(), image, wait=3)
    assert any("boom" in e for e in control["errors"]) and any("undefinedFunction" in e for e in control["errors"])
    assert control["state"] is None and control["verdict"] is None and control["heatmap"] is None

    result = inspect_in_page(browser, url + "/", image, wait=60)
    assert result["errors"] == [], result["errors"]
    assert result["state"] == "done", result
    expected = answers[str(image)]
    assert result["verdict"] == expected["decision"] == "anomalous"
    assert float(result["score"]) == expected["score"]
    assert "vs threshold" in result["line"]
    side = Image.open(image).size
    for kind in ("original", "heatmap", "mask"):
        assert result[kind] == {"ok": True, "width": side[0], "height": side[1]}, (kind, result[kind])
    assert result["history"] == 1
    assert result["resources"] and all(r.startswith(url + "/") for r in result["resources"]), result["resources"]

    tools = result["tools"]
    shot = base64.b64decode(tools.call("Page.captureScreenshot", format="png")["data"])
    screenshot = tmp_path / "serve.png"
    screenshot.write_bytes(shot)
    pixels = np.asarray(Image.open(screenshot).convert("RGB"))
    assert pixels.shape[:2] == (1000, 1280) and pixels.std() > 10  # not a blank page
    if os.environ.get("ODDSPOT_SCREENSHOT_DIR"):
        out = Path(os.environ["ODDSPOT_SCREENSHOT_DIR"])
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, out / "serve.png")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The service on a tiny calibrated PatchCore; the defective test images; the service's own answers."""
    import httpx
    import torch
    from model_cases import inspect_patchcore

    from oddspot.data.image_io import list_images
    from oddspot.serve.models import load_served
    from oddspot.serve.server import BackgroundServer

    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("serve-page")
    case = inspect_patchcore(tmp)
    case.model.save(tmp / "brick")
    images = [p for d in sorted((case.data / "brick" / "test").iterdir()) if d.name != "good" for p in list_images(d)]
    with BackgroundServer([load_served(str(tmp / "brick"), runtime="torch", device="cpu")]) as url:
        answers = {}
        with httpx.Client(base_url=url, timeout=60) as client:
            for p in images:
                r = client.post("/v1/models/brick/predict", content=p.read_bytes(), headers={"content-type": "image/png"})
                answers[str(p)] = r.json()["results"][0]
        yield url, images, answers
