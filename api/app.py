"""create_app(settings): the FastAPI application behind `shelfready serve`.

Models and the catalog are loaded once, in a background thread started by the
lifespan, so /healthz answers at once and /readyz says 503 until they are in.
Middleware order, outermost first: CORS (only when origins are configured),
API key, body size limit; then the routes. Inference runs on the bounded pool.
"""
from __future__ import annotations

import asyncio
import html
import logging
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse

from hygiene.config import PRESETS

from . import errors
from .engine import Engine
from .limits import WorkPool
from .routes import build_router
from .schemas import REPORT_HEADER, Health, Ready, error_responses
from .security import DOCS_ASSETS, KEY_HEADER, ApiKeyMiddleware, BodyLimitMiddleware, key_matches
from .settings import ApiSettings

log = logging.getLogger("shelfready.api")
PAGE = Path(__file__).with_name("static") / "index.html"


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or ApiSettings()
    keys = settings.all_keys()
    engine = Engine(settings)
    pool = WorkPool(settings.pool_size, settings.capacity, settings.timeout)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if not keys:
            log.warning("no API keys configured: authentication is OFF; anyone who can reach "
                        "%s:%s can use the API (set --api-keys-file or SHELFREADY_API_KEYS)",
                        settings.host, settings.port)
        loading = asyncio.get_running_loop().run_in_executor(None, engine.load)
        try:
            yield
        finally:
            await asyncio.wait([loading])  # never tear down under a loading thread
            pool.shutdown()

    app = FastAPI(
        title="shelfready",
        version="0.1.0",
        summary="Clean product photos and check their readiness for marketplaces and visual search.",
        description=(f"Send `{KEY_HEADER.title()}` on every /v1 call when the server has keys. "
                     f"`POST /v1/clean` answers the image with its report in `{REPORT_HEADER}`."),
        lifespan=lifespan,
        docs_url=None,  # served below from local files: no CDN, works offline
        redoc_url=None,
    )
    app.state.settings, app.state.engine, app.state.pool = settings, engine, pool
    errors.install(app)
    app.include_router(build_router(settings, engine, pool, keys_required=bool(keys)))

    # added innermost first: the last one added wraps all the others
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(ApiKeyMiddleware, keys=keys)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=[KEY_HEADER, "content-type", "accept"],
                           expose_headers=[REPORT_HEADER, "retry-after"], max_age=600)

    _mount_docs(app)
    page = PAGE.read_text(encoding="utf-8").replace("<!--PRESETS-->", "".join(
        f"<option{' selected' if p == settings.preset else ''}>{html.escape(p)}</option>" for p in PRESETS))

    @app.get("/", include_in_schema=False)
    async def uploader() -> HTMLResponse:
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    @app.get("/healthz", response_model=Health, summary="The process answers")
    async def healthz() -> Health:
        return Health(status="ok")

    @app.get("/readyz", response_model=Ready, summary="Models loaded; 503 until then",
             description="Without a valid key on a server that has keys, only the status.",
             responses=error_responses(503))
    async def readyz(request: Request):
        if not engine.ready:
            detail = engine.error or "models are still loading"
            return errors.error_json(503, "not_ready", detail, {"Retry-After": str(settings.retry_after)})
        if keys and not key_matches(request.headers.get(KEY_HEADER, "").encode(), keys):
            return JSONResponse({"status": "ready"})
        removers = settings.clean_config()  # "cascade" named as its two removers
        return JSONResponse(Ready(
            status="ready", model=removers.model, fallback_model=removers.fallback_model,
            embedder=getattr(engine.embedder, "name", None), catalog_items=engine.catalog_size(),
            pool=pool.stats()).model_dump())

    return app


def _mount_docs(app: FastAPI) -> None:
    """Swagger UI at /docs from the swagger-ui-bundle-v2 package (no external assets)."""
    from fastapi.openapi.docs import (
        get_swagger_ui_html,
        get_swagger_ui_oauth2_redirect_html,
    )
    from fastapi.staticfiles import StaticFiles

    try:
        from swagger_ui_bundle import swagger_ui_path
        assets = DOCS_ASSETS
        app.mount(assets, StaticFiles(directory=swagger_ui_path), name="docs-assets")
        js, css, icon = (f"{assets}/swagger-ui-bundle.js", f"{assets}/swagger-ui.css",
                         f"{assets}/favicon-32x32.png")
    except ImportError:  # package missing: FastAPI's default (CDN) assets
        log.warning("swagger-ui-bundle-v2 not installed: /docs loads its assets from a CDN")
        js = css = icon = None

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        extra = {k: v for k, v in (("swagger_js_url", js), ("swagger_css_url", css),
                                   ("swagger_favicon_url", icon)) if v}
        return get_swagger_ui_html(openapi_url="/openapi.json", title="shelfready API",
                                   oauth2_redirect_url="/docs/oauth2-redirect", **extra)

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()
