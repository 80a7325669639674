"""Weights files given by the user: a local file or a URL (downloaded once into a cache), identified by sha256.

Only `read_state_dict` needs torch (imported there), so torch-free configs can hash a weights file.

A run records the weights as given plus their sha256; loading the run re-opens the file and checks
the digest, so a model is never silently rebuilt on different weights. Files are read without
unpickling: `.safetensors`, or `.pth`/`.pt` through `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from oddspot.errors import OddspotError

if TYPE_CHECKING:
    import torch

URL_SCHEMES = ("http", "https", "file")
CHUNK = 1 << 20
# torchvision / torch.hub file names end in the first hex digits of the file's sha256: resnet18-f37072fd.pth
_HASH_PREFIX = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z]+$")


def is_url(spec: str) -> bool:
    """True when `spec` is a URL (http, https or file) rather than a path."""
    return urllib.parse.urlparse(spec).scheme in URL_SCHEMES


def cache_dir() -> Path:
    """Where downloaded weights live: $ODDSPOT_CACHE/weights, else ~/.cache/oddspot/weights."""
    root = os.environ.get("ODDSPOT_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "oddspot") / "weights"


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(CHUNK):
                digest.update(chunk)
    except OSError as exc:
        raise OddspotError(f"{path}: cannot read the weights file ({exc.strerror or exc}); pass an existing file") from None
    return digest.hexdigest()


def cached_path(url: str) -> Path:
    """The cache file of `url`: its file name, prefixed by a digest of the whole URL (no clashes)."""
    name = Path(urllib.parse.urlparse(url).path).name or "weights"
    return cache_dir() / f"{hashlib.sha256(url.encode()).hexdigest()[:12]}-{name}"


def download(url: str, target: Path) -> str:
    """Stream `url` into `target` atomically (temp file + rename); returns its sha256."""
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            while chunk := response.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
        sha = digest.hexdigest()
        match = _HASH_PREFIX.search(Path(urllib.parse.urlparse(url).path).name)
        if match and not sha.startswith(match.group(1)):
            raise OddspotError(f"{url}: downloaded file has sha256 {sha[:12]}..., but its name promises "
                               f"{match.group(1)}...; check the URL")
        os.replace(tmp, target)
    except OddspotError:
        Path(tmp).unlink(missing_ok=True)
        raise
    except (OSError, ValueError) as exc:  # URLError is an OSError
        Path(tmp).unlink(missing_ok=True)
        raise OddspotError(f"{url}: cannot download the weights ({exc}); pass --weights FILE when offline") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return sha


def resolve_weights(spec: str, expected_sha256: str | None = None) -> tuple[Path, str]:
    """The local file of the weights `spec` (a path, or a URL downloaded once into the cache) and its sha256.

    With `expected_sha256` (from a saved run), a file whose digest differs is a one-line error.
    """
    if is_url(spec):
        path = cached_path(spec)
        sha = file_sha256(path) if path.is_file() else download(spec, path)
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise OddspotError(f"{spec}: weights file not found; pass an existing .pth/.pt/.safetensors file")
        sha = file_sha256(path)
    if expected_sha256 is not None and sha != expected_sha256:
        raise OddspotError(f"{spec}: weights changed since the model was fitted (sha256 {sha[:12]}... != "
                           f"{expected_sha256[:12]}... recorded); restore the original file or refit")
    return path, sha


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file (.safetensors, or a .pth/.pt state dict loaded without unpickling)."""
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt file raises many types; report it in one line
        raise OddspotError(f"{path}: cannot read weights ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                           "pass a .safetensors file or a state dict saved with torch.save") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise OddspotError(f"{path}: not a state dict of named tensors; save model.state_dict() with torch.save")
    return state
