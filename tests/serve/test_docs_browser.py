"""The OpenAPI page renders offline in a real browser: headless Chromium from Debian's packages (/usr/bin/chromium,
installed by scripts/setup all) driven by Playwright, with every request to another host refused. Before the
Swagger UI files were served by the service, this page stayed blank. Marked `browser`."""

from __future__ import annotations

from urllib.parse import urlparse

import pytest
from serve_helpers import Service

pytestmark = [pytest.mark.browser, pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)]


def test_the_docs_page_renders_with_other_hosts_unreachable(browser, service: Service) -> None:  # type: ignore[no-untyped-def]
    # the docs need an API key (or a console session) like every route but the probes
    context = browser.new_context(extra_http_headers={"Authorization": f"Bearer {service.key('docs')}"})
    context.set_default_timeout(30_000)
    page = context.new_page()
    local = urlparse(service.url).netloc
    requested: list[str] = []
    refused: list[str] = []
    problems: list[str] = []

    def only_local(route) -> None:  # type: ignore[no-untyped-def]
        url = route.request.url
        requested.append(url)
        if urlparse(url).netloc == local:
            route.continue_()
        else:  # offline: the page must not need anything from another host
            refused.append(url)
            route.abort()

    page.route("**/*", only_local)
    page.on("pageerror", lambda error: problems.append(f"error: {error}"))
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    try:
        page.goto(service.url + "/docs")
        page.wait_for_selector(".opblock-summary-path")  # Swagger UI ran and rendered the OpenAPI document
        paths = page.locator(".opblock-summary-path").all_inner_texts()
        title = page.locator(".info .title").first.inner_text()
    finally:
        context.close()
    assert {"/v1/moderations", "/v1/classify", "/v1/match", "/v1/rank"} <= set(paths)
    assert title.startswith("redone serve")
    assert refused == [] and problems == []
    assert service.url + "/openapi.json" in requested
    assert service.url + "/docs/assets/swagger-ui-bundle.js" in requested
