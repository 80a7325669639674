"""The service's limits, in one place: batching, queue, timeouts, request size, pixel budget, token."""

from __future__ import annotations

from dataclasses import dataclass

from oddspot.choices import DEFAULT_MAX_PIXELS
from oddspot.data.image_io import DECODE_PIXELS, check_max_pixels
from oddspot.errors import OddspotError

LOOPBACK = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class ServeSettings:
    """Every limit of `oddspot serve` (the CLI's options), checked on creation.

    - `max_batch`, `max_wait_ms`: a model call takes up to `max_batch` images, or fewer once the
      oldest queued image has waited `max_wait_ms`;
    - `queue`: images that may wait per model (more: 503 with Retry-After); the waiting images
      also hold at most `queue_pixels` decoded pixels;
    - `timeout_s`: a request not answered in this time gets 504;
    - `max_body_bytes` (413 above), `max_images` per request, `max_pixels` per image (from the
      header, before decoding: 400 above);
    - `token`: when set, /v1/* and /metrics need `Authorization: Bearer <token>` (401 without);
    - `decoders`: images decoded (and pictures rendered) at once, which bounds their memory.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    max_batch: int = 16
    max_wait_ms: float = 5.0
    queue: int = 256
    timeout_s: float = 30.0
    max_body_bytes: int = 32 * 2**20
    max_images: int = 64
    max_pixels: int = DEFAULT_MAX_PIXELS
    queue_pixels: int = 64 * DECODE_PIXELS
    token: str | None = None
    decoders: int = 2

    def __post_init__(self) -> None:
        checks = (("--port", self.port, 0, 65535), ("--max-batch", self.max_batch, 1, 1024),
                  ("--max-wait-ms", self.max_wait_ms, 0, 10_000), ("--queue", self.queue, 1, 1_000_000),
                  ("--timeout", self.timeout_s, 0.001, 3600), ("--max-body-mb", self.max_body_bytes, 1, 2**40),
                  ("max_images", self.max_images, 1, 10_000), ("queue_pixels", self.queue_pixels, 1, 2**50),
                  ("decoders", self.decoders, 1, 1024))
        for name, value, low, high in checks:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                raise OddspotError(f"{name} {value!r}: use a number in [{low}, {high}]")
        check_max_pixels(self.max_pixels)
        if self.token is not None and not self.token.strip():
            raise OddspotError("the bearer token is empty; set a non-empty token or none")

    @property
    def loopback(self) -> bool:
        """True when only this machine can reach the service."""
        return self.host in LOOPBACK or self.host.startswith("127.")
