"""/docs and /redoc work offline (serve_app.api_docs): the pages and every file they load come
from the app itself, also under a route prefix. No Ray cluster: the ASGI apps run in-process
through httpx's ASGITransport, on a fresh app and on the service's own ingress app."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest
from fastapi import FastAPI

from serve_app.api_docs import install_offline_docs

PAGES = ["/docs", "/redoc"]
ROOT_PATHS = ["", "/rvc"]

#: URLs in FastAPI's docs pages: tag attributes, Swagger's `url: '...'` and the OAuth2
#: redirect (`window.location.origin + '...'`).
_ATTR_URL = re.compile(r"""\b(?:src|href|spec-url)\s*=\s*["']([^"']*)["']""")
_JS_URL = re.compile(r"""(?:\burl\s*:|window\.location\.origin\s*\+)\s*["']([^"']*)["']""")
_ASSET_URL = re.compile(r"""\b(?:src|href)\s*=\s*["']([^"']*)["']""")
_SWAGGER_CONFIG = re.compile(r"SwaggerUIBundle\(\{(.*?)\}\)", re.S)
_ANY_HOST = re.compile(r"https?://", re.I)
_CDN_HOSTS = re.compile(
    r"cdn\.jsdelivr\.net|unpkg\.com|cdnjs\.cloudflare\.com|fonts\.(?:googleapis|gstatic)\.com", re.I
)
_CONTENT_TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png"}


def fetch(app: FastAPI, *paths: str, root_path: str = "") -> list[httpx.Response]:
    """GET each path from the ASGI app, with the ASGI root_path Ray Serve would pass."""

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app, root_path=root_path)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return [await client.get(path) for path in paths]

    return asyncio.run(run())


def page_urls(html: str) -> list[str]:
    return _ATTR_URL.findall(html) + _JS_URL.findall(html)


def asset_urls(html: str) -> list[str]:
    """The files a page loads itself (script src, stylesheet and icon href)."""
    return _ASSET_URL.findall(html)


def fresh_app() -> FastAPI:
    app = FastAPI(title="docs test", docs_url=None, redoc_url=None)

    @app.get("/ping")
    def ping() -> dict[str, str]:
        return {"pong": "yes"}

    install_offline_docs(app)
    return app


@pytest.fixture(params=["fresh", "ingress"])
def app(request) -> FastAPI:
    if request.param == "ingress":
        from serve_app.ingress import app as ingress_app

        return ingress_app
    return fresh_app()


def get_page(app: FastAPI, page: str, root_path: str) -> str:
    (response,) = fetch(app, root_path + page, root_path=root_path)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    return response.text


@pytest.mark.parametrize("root_path", ROOT_PATHS)
@pytest.mark.parametrize("page", PAGES)
def test_page_references_only_its_own_origin(app, page, root_path):
    html = get_page(app, page, root_path)
    assert not _ANY_HOST.search(html), "the page names an outside host"
    urls = page_urls(html)
    assert len(urls) >= 3, urls  # stylesheet/script, icon, OpenAPI document at least
    for url in urls:
        assert url.startswith(root_path + "/") and not url.startswith("//"), url


@pytest.mark.parametrize("root_path", ROOT_PATHS)
@pytest.mark.parametrize("page", PAGES)
def test_every_referenced_asset_is_served(app, page, root_path):
    assets = asset_urls(get_page(app, page, root_path))
    suffixes = sorted(url[url.rfind(".") :] for url in assets)
    assert suffixes == ([".css", ".js", ".png"] if page == "/docs" else [".js", ".png"]), assets
    for url, response in zip(assets, fetch(app, *assets, root_path=root_path)):
        assert response.status_code == 200, url
        expected = _CONTENT_TYPES[url[url.rfind(".") :]]
        assert expected in response.headers["content-type"], (url, response.headers["content-type"])
        if not url.endswith(".png"):
            assert len(response.content) > 100_000, url  # the real bundle, not a stub


@pytest.mark.parametrize("root_path", ROOT_PATHS)
@pytest.mark.parametrize("page", PAGES)
def test_assets_and_config_call_no_outside_host(app, page, root_path):
    html = get_page(app, page, root_path)
    if page == "/docs":
        (config,) = _SWAGGER_CONFIG.findall(html)
        assert re.search(r"""["']?validatorUrl["']?\s*:\s*null""", config), config
        assert not _ANY_HOST.search(config), config
    assets = asset_urls(html)
    for url, response in zip(assets, fetch(app, *assets, root_path=root_path)):
        assert response.status_code == 200, url
        if url.endswith(".css"):
            assert "@import" not in response.text, url
            for ref in re.findall(r"url\(\s*[\"']?([^\"')]*)", response.text):
                assert ref.startswith("data:"), (url, ref[:80])
        elif url.endswith(".js"):
            assert not _CDN_HOSTS.search(response.text), url


@pytest.mark.parametrize("page", PAGES)
def test_urls_carry_the_route_prefix(app, page):
    html = get_page(app, page, "/rvc")
    assets = asset_urls(html)
    assert assets and all(url.startswith("/rvc/docs-assets/") for url in assets), assets
    spec = re.findall(r"""(?:\burl\s*:|spec-url\s*=)\s*["']([^"']*)["']""", html)
    assert spec == ["/rvc/openapi.json"], spec
    if page == "/docs":
        assert "window.location.origin + '/rvc/docs/oauth2-redirect'" in html
    *asset_responses, spec_response = fetch(app, *assets, *spec, root_path="/rvc")
    for url, response in zip(assets, asset_responses):
        assert response.status_code == 200, url
    assert spec_response.status_code == 200
    assert spec_response.json()["info"]["title"] == app.title


@pytest.mark.parametrize("root_path", ROOT_PATHS)
def test_oauth2_redirect_page_is_served_offline(app, root_path):
    (response,) = fetch(app, root_path + "/docs/oauth2-redirect", root_path=root_path)
    assert response.status_code == 200
    assert "swaggerUIRedirectOauth2" in response.text
    assert not _ANY_HOST.search(response.text)


def test_docs_routes_stay_out_of_the_schema(app):
    paths = app.openapi()["paths"]
    assert not [p for p in paths if p.startswith(("/docs", "/redoc"))], list(paths)


def test_refuses_an_app_with_fastapis_cdn_docs():
    with pytest.raises(ValueError, match="docs_url=None"):
        install_offline_docs(FastAPI())
    with pytest.raises(ValueError, match="openapi_url"):
        install_offline_docs(FastAPI(docs_url=None, redoc_url=None, openapi_url=None))
