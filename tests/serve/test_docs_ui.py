"""The OpenAPI page works offline: `/docs` references only the service's own URLs, and the Swagger UI files it loads
are served from the package (vendored `swagger-ui-dist`, serve/static/swagger-ui) with the right content types."""

from __future__ import annotations

import ast
import fnmatch
import re
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from serve_helpers import REPO, Service

from redone_sdk.serve.docs_ui import ASSET_TYPES, SWAGGER_UI_DIR, SWAGGER_UI_VERSION

SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def _get(service: Service, path: str, **kwargs: object) -> httpx.Response:
    """GET with an API key: the docs need one (or a console session) like every route but the probes."""
    key = getattr(service, "_docs_key", None) or service.key("docs")
    service._docs_key = key  # type: ignore[attr-defined]
    return httpx.get(service.url + path, headers={"Authorization": f"Bearer {key}"}, **kwargs)  # type: ignore[arg-type]


class _References(HTMLParser):
    """Every URL a page refers to in src= and href= attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


def _page_urls(html: str) -> list[str]:
    parser = _References()
    parser.feed(html)
    # the script's own URLs: the OpenAPI document and the OAuth2 redirect page
    scripted = re.findall(r"""url:\s*'([^']*)'""", html) + re.findall(r"""\+\s*'(/[^']*)'""", html)
    return parser.urls + scripted


@SQLITE_ONLY
def test_docs_page_loads_only_local_assets(service: Service) -> None:
    page = _get(service, "/docs", timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    urls = _page_urls(page.text)
    assert "/openapi.json" in urls and len(urls) >= 4
    outside = [url for url in urls if not url.startswith("/") or url.startswith("//")]
    assert outside == [], f"/docs refers to other hosts: {outside}"
    assert "http://" not in page.text and "https://" not in page.text
    assert '"validatorUrl": null' in page.text  # no badge fetched from validator.swagger.io

    assets = [url for url in urls if url.startswith("/docs/assets/")]
    assert sorted(url.rsplit("/", 1)[1] for url in assets) == sorted(ASSET_TYPES)
    for url in assets:
        answer = _get(service, url, timeout=30)
        name = url.rsplit("/", 1)[1]
        assert answer.status_code == 200, url
        assert answer.headers["content-type"] == ASSET_TYPES[name], url
        assert answer.content == (SWAGGER_UI_DIR / name).read_bytes(), url
    script = _get(service, "/docs/assets/swagger-ui-bundle.js", timeout=30).text
    assert "SwaggerUIBundle" in script and f'PACKAGE_VERSION:"{SWAGGER_UI_VERSION}"' in script
    assert _get(service, "/docs/oauth2-redirect", timeout=30).status_code == 200


@SQLITE_ONLY
def test_swagger_ui_reads_the_openapi_version_served(service: Service) -> None:
    # FastAPI writes OpenAPI 3.1, which Swagger UI renders from 5.0 on (swagger-ui-bundle on PyPI ships 4.15)
    document = _get(service, "/openapi.json", timeout=30).json()
    assert document["openapi"].startswith("3.1")
    assert int(SWAGGER_UI_VERSION.split(".")[0]) >= 5
    assert "/docs" not in document["paths"] and not any(p.startswith("/docs/") for p in document["paths"])


@SQLITE_ONLY
def test_only_the_page_files_are_served_and_redoc_is_gone(service: Service) -> None:
    for path in ("/docs/assets/README.md", "/docs/assets/LICENSE", "/docs/assets/..%2F..%2Fapp.py", "/redoc"):
        answer = _get(service, path, timeout=30)
        assert answer.status_code == 404, path
        assert answer.json()["error"]["code"] == "not_found"


def test_the_files_and_their_license_ship_in_the_package() -> None:
    # pyproject.toml's [tool.setuptools.package-data] line for the package (no TOML reader before Python 3.11)
    declared = re.search(r'^"redone_sdk\.serve" = (\[.*\])$', (REPO / "pyproject.toml").read_text("utf-8"), re.M)
    assert declared is not None, "pyproject.toml declares no package data for redone_sdk.serve"
    patterns = ast.literal_eval(declared.group(1))
    for name in [*ASSET_TYPES, "LICENSE", "NOTICE"]:
        assert (SWAGGER_UI_DIR / name).is_file(), name
        relative = Path("static", "swagger-ui", name).as_posix()
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), f"{relative} is not package data"
