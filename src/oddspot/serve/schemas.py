"""The JSON shapes of the service's answers, as pydantic models (they make the OpenAPI document at /docs)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    """Every error: one line saying what is wrong and what to do."""

    error: str = Field(examples=["model 'bottle' unknown; loaded: brick, grass"])


class Thresholds(BaseModel):
    """Raw-score thresholds (null where the model has none); a normalized score decides at 0.5."""

    image: float | None = None
    pixel: float | None = None
    normalized: float | None = None
    score: str | None = Field(None, description="road: the pixel score that decides")


class ModelInfo(BaseModel):
    name: str
    task: Literal["inspect", "road"]
    kind: str
    version: str = Field(description="first 12 hex digits of the sha256 of the run's model.json")
    oddspot_version: str
    runtime: str
    input_size: list[int] | None = Field(description="[height, width] images are resized to; null: their own size")
    thresholds: Thresholds
    calibrated: bool
    outputs: list[str]


class ModelList(BaseModel):
    models: list[ModelInfo]


class ImageTiming(BaseModel):
    """Milliseconds spent decoding, waiting for a batch and in the model call, and that call's batch size
    (the last three absent when the image was not scored)."""

    decode: float
    queue: float | None = None
    inference: float | None = None
    batch_size: int | None = None


class ImageAnswer(BaseModel):
    """One image: its scores and decision, or `error` and `status` when it could not be scored."""

    index: int
    name: str | None = Field(None, description="the multipart file name; null for a raw body")
    status: int = 200
    error: str | None = None
    width: int | None = None
    height: int | None = None
    score: float | None = Field(None, description="raw score, as `oddspot predict` writes it to scores.csv")
    normalized: float | None = Field(None, description="score mapped to [0, 1], the threshold at 0.5")
    decision: Literal["anomalous", "normal"] | None = None
    timing_ms: ImageTiming | None = None
    heatmap: str | None = Field(None, description="base64 PNG: the anomaly map over the image (outputs=heatmap)")
    mask: str | None = Field(None, description="base64 PNG: predicted anomalous pixels, 255 (outputs=mask)")
    map: str | None = Field(None, description="base64 .npy: the float32 anomaly map (outputs=map)")
    summary: dict[str, Any] | None = Field(None, description="road: decision score, pixel threshold, flagged pixels")


class PredictAnswer(BaseModel):
    model: str
    version: str
    task: str
    kind: str
    runtime: str
    thresholds: Thresholds
    results: list[ImageAnswer]
    timing_ms: dict[str, float]
