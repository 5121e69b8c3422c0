"""The /v1 endpoints: thin adapters from multipart requests to api.engine calls."""
from __future__ import annotations

import base64
import json

from fastapi import APIRouter, File, Form, Path, Query, Request, Security, UploadFile
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader

from hygiene.config import CleanConfig
from photos.config import OutputConfig
from photos.keys import one_line

from .engine import Engine, NoCatalog, TextSearchUnsupported
from .errors import ApiError
from .limits import Busy, Timeout, WorkPool
from .schemas import (
    MEDIA_TYPES,
    REPORT_HEADER,
    CatalogItem,
    CheckResponse,
    CleanJson,
    Deleted,
    ImageFormat,
    ModelList,
    Preset,
    ResponseMode,
    SearchResponse,
    error_responses,
)
from .settings import ApiSettings

SUPPORTED = "JPEG, PNG, WebP, HEIC/HEIF, BMP, TIFF or GIF"


# Declared for the OpenAPI schema (so /docs "Authorize" sends the key); the check itself is
# security.ApiKeyMiddleware, which refuses before the body is read.
API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False, description="one of the server's API keys")


def build_router(settings: ApiSettings, engine: Engine, pool: WorkPool,
                 keys_required: bool = False) -> APIRouter:
    router = APIRouter(prefix="/v1", dependencies=[Security(API_KEY)] if keys_required else [])
    default_preset = Preset(settings.preset)
    busy = {"Retry-After": str(settings.retry_after)}

    async def read_photo(photo: UploadFile) -> bytes:
        from photos.io import sniff_format

        data = await photo.read()
        await photo.close()
        if not data:
            raise ApiError(415, "unsupported_media_type", f"empty upload; send a {SUPPORTED} photo")
        if sniff_format(data[:64 * 1024]) is None:
            raise ApiError(415, "unsupported_media_type",
                           f"the bytes are not a supported image; send a {SUPPORTED} photo")
        return data

    async def run(fn, *args):
        """Admission + pool + deadline, mapping library errors to HTTP answers."""
        from photos.io import ImageLoadError
        from removers.models import ModelError

        if not engine.ready:
            raise ApiError(503, "not_ready", engine.error or "models are still loading", busy)
        try:
            return await pool.run(fn, *args)
        except Busy:
            raise ApiError(503, "busy", "all workers are busy and the queue is full; retry later",
                           busy) from None
        except Timeout:
            raise ApiError(504, "timeout", f"no answer within {settings.timeout:g} s") from None
        except NoCatalog:
            raise ApiError(409, "no_catalog", "this server has no catalog; start it with "
                           "`shelfready serve --catalog DIR`") from None
        except ImageLoadError as exc:
            raise ApiError(exc.http_status, exc.code, _line(exc)) from None
        except TextSearchUnsupported as exc:
            raise ApiError(422, "text_search_unsupported", _line(exc)) from None
        except ModelError as exc:
            raise ApiError(503, "model_unavailable", _line(exc), busy) from None
        except ValueError as exc:  # option combinations the config refuses
            raise ApiError(422, "invalid_option", _line(exc)) from None

    def clean_config(preset: Preset, fill: float | None, size: int | None,
                     transparent: bool = False) -> CleanConfig:
        try:
            return settings.clean_config(preset=preset.value, fill=fill, size=size, transparent=transparent)
        except ValueError as exc:
            raise ApiError(422, "invalid_option", _line(exc)) from None

    def need_catalog() -> None:
        if not settings.catalog:
            raise ApiError(409, "no_catalog", "this server has no catalog; start it with "
                           "`shelfready serve --catalog DIR`")

    image_content = {m: {"schema": {"type": "string", "format": "binary"}}
                     for m in MEDIA_TYPES.values()}

    @router.post(
        "/clean", summary="Clean a product photo",
        response_class=JSONResponse, response_model=None,
        responses={200: {"model": CleanJson, "content": image_content,
                         "description": f"The cleaned image with its readiness report (compact JSON) "
                                        f"in the {REPORT_HEADER} header; or CleanJson when the client "
                                        "sends Accept: application/json or ?response=json"},
                   **error_responses(400, 401, 413, 415, 422, 503, 504)},
    )
    async def clean(
        request: Request,
        photo: UploadFile = File(..., description=f"the product photo ({SUPPORTED})"),
        preset: Preset = Form(default_preset, description="marketplace rules"),
        format: ImageFormat = Form(ImageFormat.jpg, description="output format (png when transparent)"),
        transparent: bool = Form(False, description="keep a transparent PNG instead of white"),
        fill: float | None = Form(None, ge=0.1, le=1.0, description="share of the canvas the product fills"),
        size: int | None = Form(None, ge=64, le=settings.max_output_size, description="output side, px"),
        response: ResponseMode | None = Query(None, description="json = base64 image + report in a JSON body"),
    ) -> Response:
        config = clean_config(preset, fill, size, transparent)
        fmt = "png" if transparent else format.value
        data = await read_photo(photo)
        encoded, report = await run(engine.clean, data, config, OutputConfig(format=fmt))
        media_type = MEDIA_TYPES[fmt]
        if _wants_json(request, response):
            body = CleanJson(report=report, image_base64=base64.b64encode(encoded).decode("ascii"),
                             media_type=media_type)
            return JSONResponse(body.model_dump(), headers={"Cache-Control": "no-store"})
        header = json.dumps(report, separators=(",", ":"), ensure_ascii=True)
        return Response(encoded, media_type=media_type, headers={
            REPORT_HEADER: header, "Cache-Control": "no-store",
            "Content-Disposition": f'inline; filename="cleaned.{fmt}"'})

    @router.post("/check", response_model=CheckResponse, summary="Readiness report of a photo as it is",
                 responses=error_responses(400, 401, 413, 415, 422, 503, 504))
    async def check(
        photo: UploadFile = File(..., description=f"the product photo ({SUPPORTED})"),
        preset: Preset = Form(default_preset, description="marketplace rules"),
    ) -> CheckResponse:
        config = clean_config(preset, None, None)
        data = await read_photo(photo)
        return CheckResponse(report=await run(engine.check, data, config))

    @router.post("/search", response_model=SearchResponse, summary="Top-k catalog items for a photo or text",
                 responses=error_responses(400, 401, 409, 413, 415, 422, 503, 504))
    async def search(
        photo: UploadFile | None = File(None, description="query photo"),
        text: str | None = Form(None, min_length=1, max_length=500, description="text query (CLIP catalogs)"),
        k: int = Form(settings.default_k, ge=1, le=settings.max_k),
        clean: bool = Form(True, description="clean the query photo first, as catalog photos are"),
    ) -> SearchResponse:
        need_catalog()
        if (photo is None) == (text is None):
            raise ApiError(422, "invalid_option", "send exactly one of `photo` or `text`")
        if text is not None:
            hits = await run(engine.search_text, text, k)
            query = "text"
        else:
            data = await read_photo(photo)
            config = settings.clean_config(preset=settings.preset) if clean else None
            hits = await run(engine.search_image, data, k, config)
            query = "image"
        return SearchResponse(query=query, embedder=engine.embedder.name,
                              hits=[h.__dict__ for h in hits])

    @router.post("/catalog/items", response_model=CatalogItem, status_code=201,
                 summary="Add a photo to the catalog (200 with the existing item if its bytes are known)",
                 responses={200: {"model": CatalogItem, "description": "Photo already in the catalog: "
                                  "its existing item, unchanged"},
                            **error_responses(400, 401, 409, 413, 415, 422, 503, 504)})
    async def add_item(
        response: Response,
        photo: UploadFile = File(..., description="the product photo"),
        sku: str = Form(..., min_length=1, max_length=200, description="no control characters"),
        label: str = Form("", max_length=200, description="no control characters"),
        clean: bool = Form(True, description="store and embed the cleaned photo"),
    ) -> CatalogItem:
        from search.items import check_text

        need_catalog()
        try:
            check_text("sku", sku)
            check_text("label", label)
        except ValueError as exc:
            raise ApiError(422, "invalid_text", _line(exc)) from None
        data = await read_photo(photo)
        config = settings.clean_config(preset=settings.preset) if clean else None
        item = await catalog_call(engine.add_item, data, sku, label, config)
        if not item.pop("added"):
            response.status_code = 200
        return CatalogItem(**item)

    @router.delete("/catalog/items/{item_id}", response_model=Deleted, summary="Remove a catalog item",
                   responses=error_responses(401, 404, 409, 422, 503, 504))
    async def delete_item(item_id: int = Path(..., ge=0, le=2**62)) -> Deleted:
        need_catalog()
        done = await catalog_call(engine.remove_item, item_id)
        if done is None:
            raise ApiError(404, "not_found", f"no catalog item with id {item_id}")
        return Deleted(**done)

    @router.get("/models", response_model=ModelList, summary="Known models, their licences, and how they would run here",
                responses=error_responses(401))
    def list_models() -> ModelList:  # sync: FastAPI runs it in a thread (first call imports OpenVINO)
        """The registry of `shelfready models list`: licence, opt-in, installed, and the
        engine/precision each would use with this server's runtime settings."""
        from removers import models, runtime

        rows = []
        for row in models.list_models() + models.optional_removers():
            info = {"name": row["name"], "kind": row["kind"], "licence": row["licence"],
                    "opt_in": not row["default"], "installed": row["present"], "note": row["note"]}
            try:
                choice = runtime.resolve(settings.runtime, row["kind"])
                info.update(runtime=choice.engine, precision=choice.precision, reason=choice.reason)
            except models.ModelError as exc:
                info["reason"] = _line(exc)
            rows.append(info)
        removers = settings.clean_config()
        return ModelList(server_model=removers.model, server_fallback_model=removers.fallback_model, models=rows)

    async def catalog_call(fn, *args):
        """``run`` for catalog writes: another process writing too long is a 503."""
        from search.catalog import CatalogBusy

        try:
            return await run(fn, *args)
        except CatalogBusy as exc:
            raise ApiError(503, "catalog_busy", _line(exc), busy) from None

    return router


def _wants_json(request: Request, mode: ResponseMode | None) -> bool:
    if mode is not None:
        return mode is ResponseMode.json
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "image/" not in accept


_line = one_line