"""Request options and response bodies of the HTTP API (pydantic models)."""
from __future__ import annotations

import enum
from typing import Any

from pydantic import BaseModel, Field

from hygiene.config import PRESETS

Preset = enum.Enum("Preset", {name: name for name in PRESETS}, type=str)


class ImageFormat(str, enum.Enum):
    jpg = "jpg"
    png = "png"
    webp = "webp"


class ResponseMode(str, enum.Enum):
    image = "image"
    json = "json"


MEDIA_TYPES = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
REPORT_HEADER = "X-Shelfready-Report"


class ErrorBody(BaseModel):
    error: str = Field(description="short machine-readable code, e.g. payload_too_large")
    detail: Any = Field(description="one-line human-readable reason (or a list of field errors)")


class CleanReport(BaseModel):
    status: str = Field(description='"cleaned" or "needs_review"')
    reasons: list[str]
    model: str = Field(description="remover that produced the mask, or input-alpha")
    report: dict[str, Any] = Field(description="readiness checks of the cleaned image")
    timings: dict[str, float]


class CleanJson(BaseModel):
    report: CleanReport
    image_base64: str
    media_type: str


class CheckResponse(BaseModel):
    report: dict[str, Any] = Field(description="readiness checks of the photo as uploaded")


class SearchHit(BaseModel):
    id: int
    sku: str
    label: str
    score: float


class SearchResponse(BaseModel):
    query: str = Field(description='"image" or "text"')
    embedder: str
    hits: list[SearchHit]


class CatalogItem(BaseModel):
    id: int
    sku: str
    label: str
    content_hash: str
    size: int = Field(description="items in the catalog after the change")


class Deleted(BaseModel):
    id: int
    deleted: bool
    size: int


class ModelInfo(BaseModel):
    name: str
    kind: str = Field(description='"remover", "embedder" or "detector"')
    licence: str
    opt_in: bool = Field(description="never used unless named (e.g. AGPL-3.0 weights)")
    installed: bool = Field(description="weights present (and checked) on this server")
    runtime: str | None = Field(None, description="engine it would run on here (None: unknown kind)")
    precision: str | None = None
    reason: str = Field("", description="why that engine and precision")
    note: str = ""


class ModelList(BaseModel):
    server_model: str = Field(description="the remover this server cleans with")
    server_fallback_model: str = Field("", description="its second remover for the cut-outs the gate does "
                                       "not trust (\"\" = none)")
    models: list[ModelInfo]


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    status: str
    model: str | None = Field(None, description="only without keys, or with a valid key")
    fallback_model: str | None = Field(None, description="second remover (\"\" = none); as `model`")
    embedder: str | None = None
    catalog_items: int | None = None
    pool: dict[str, int] | None = None


def error_responses(*codes: int) -> dict[int | str, dict]:
    """OpenAPI `responses=` entry documenting our JSON error body for each code."""
    text = {400: "Bad request", 401: "Missing or invalid API key", 404: "Not found",
            409: "No catalog configured", 413: "Body too large", 415: "Not a supported image",
            422: "Invalid image or option", 503: "Busy or not ready (see Retry-After)",
            504: "Timed out"}
    return {c: {"model": ErrorBody, "description": text[c]} for c in codes}
