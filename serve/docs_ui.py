"""The OpenAPI page (`/docs`) with Swagger UI served by the service itself, so that it works offline.

FastAPI's own page loads Swagger UI's script, style sheet and icon from CDNs (blank without the internet); this
one loads them from `/docs/assets/`, which serves the files of npm's `swagger-ui-dist` vendored under
`static/swagger-ui/` (see its README for the version, checksums and license), and turns off Swagger UI's online
validator badge (a request to validator.swagger.io).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse

from .errors import NotFoundError

__all__ = ["ASSETS_PATH", "ASSET_TYPES", "SWAGGER_UI_DIR", "SWAGGER_UI_VERSION", "add_docs"]

SWAGGER_UI_VERSION = "5.36.0"
SWAGGER_UI_DIR = Path(__file__).resolve().parent / "static" / "swagger-ui"
ASSETS_PATH = "/docs/assets"
# the files the page loads, by name, with their content types (nothing else in the folder is served)
ASSET_TYPES = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}


def add_docs(app: FastAPI, *, title: str, openapi_url: str = "/openapi.json") -> None:
    """Add `GET /docs` (the Swagger page), its OAuth2 redirect page and `GET /docs/assets/{name}` to `app`, which
    must be built with `docs_url=None` (and `redoc_url=None`: ReDoc would load its script from a CDN)."""
    missing = [name for name in ASSET_TYPES if not (SWAGGER_UI_DIR / name).is_file()]
    if missing:  # a broken install (package data left out): say so at start, not as a blank page
        raise FileNotFoundError(f"Swagger UI files missing from {SWAGGER_UI_DIR}: {', '.join(missing)}")
    redirect = "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    async def swagger_page() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{title} - API docs",
            swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_PATH}/favicon-32x32.png",
            oauth2_redirect_url=redirect,
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get(redirect, include_in_schema=False)
    async def swagger_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(ASSETS_PATH + "/{name}", include_in_schema=False)
    async def swagger_asset(name: str) -> FileResponse:
        media_type = ASSET_TYPES.get(name)
        if media_type is None:
            raise NotFoundError(f"no docs asset {name!r}")
        return FileResponse(
            SWAGGER_UI_DIR / name, media_type=media_type, headers={"Cache-Control": "public, max-age=86400"}
        )
