"""HTTP adapter for storefront uploaders: `create_app(ApiSettings)` -> FastAPI app.

Names are imported lazily so `import api.settings` (the CLI does) stays cheap.
"""
from __future__ import annotations

__all__ = ["create_app", "ApiSettings"]


def __getattr__(name: str):
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "ApiSettings":
        from .settings import ApiSettings

        return ApiSettings
    raise AttributeError(name)
