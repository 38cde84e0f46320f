"""API docs that work offline: Swagger UI at /docs and ReDoc at /redoc, with their JS, CSS
and icon served by this app from the files that the `fastapi-offline` package ships, so the
pages load nothing from a CDN. Swagger's online validator badge is off.

Every URL in the pages is built from the request's ASGI `root_path`, which Ray Serve sets to
the app's route prefix, so the pages work at `/` and under a prefix such as `/rvc`.

No `from __future__ import annotations` here: FastAPI must see real types on the routes.
"""


from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

#: Where the asset files are mounted, relative to the app's root path.
ASSETS_URL = "/docs-assets"

#: Swagger UI settings forced on top of the app's own: `validatorUrl: null` stops the badge
#: that sends the spec to validator.swagger.io.
OFFLINE_SWAGGER_PARAMETERS = {"validatorUrl": None}


def assets_dir() -> Path:
    """The folder of fastapi-offline's Swagger UI and ReDoc files (swagger-ui-bundle.js,
    swagger-ui.css, redoc.standalone.js, favicon.png)."""
    return Path(str(files("fastapi_offline").joinpath("static")))


def _root_path(request: Request) -> str:
    """The prefix the app is served under ('' at `/`), as the ASGI server passed it."""
    return request.scope.get("root_path", "").rstrip("/")


def install_offline_docs(
    app: FastAPI,
    *,
    docs_url: str = "/docs",
    redoc_url: str | None = "/redoc",
    assets_url: str = ASSETS_URL,
) -> None:
    """Add Swagger UI at `docs_url` (plus its OAuth2 redirect page at the app's
    `swagger_ui_oauth2_redirect_url`, when set), ReDoc at `redoc_url` (None: no ReDoc) and
    the packaged asset files at `assets_url`, none of which appear in the OpenAPI schema.

    The app must be created with `docs_url=None, redoc_url=None` (FastAPI's own pages load
    from a CDN) and with an `openapi_url`. Raises ValueError otherwise.
    """
    if app.docs_url is not None or app.redoc_url is not None:
        raise ValueError("create the app with docs_url=None, redoc_url=None")
    if not app.openapi_url:
        raise ValueError("the app has no openapi_url to document")
    openapi_url = app.openapi_url
    oauth2_redirect_url = app.swagger_ui_oauth2_redirect_url
    swagger_parameters = {**(app.swagger_ui_parameters or {}), **OFFLINE_SWAGGER_PARAMETERS}

    app.mount(assets_url, StaticFiles(directory=assets_dir()), name="docs-assets")

    def page_args(request: Request, ui: str) -> tuple[str, dict[str, str]]:
        """The request's root path, and the OpenAPI URL and title that every page takes."""
        root = _root_path(request)
        return root, {"openapi_url": root + openapi_url, "title": f"{app.title} - {ui}"}

    async def swagger_ui_html(request: Request) -> HTMLResponse:
        root, common = page_args(request, "Swagger UI")
        return get_swagger_ui_html(
            **common,
            swagger_js_url=f"{root}{assets_url}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{assets_url}/swagger-ui.css",
            swagger_favicon_url=f"{root}{assets_url}/favicon.png",
            oauth2_redirect_url=root + oauth2_redirect_url if oauth2_redirect_url else None,
            init_oauth=app.swagger_ui_init_oauth,
            swagger_ui_parameters=swagger_parameters,
        )

    app.add_route(docs_url, swagger_ui_html, include_in_schema=False)

    if oauth2_redirect_url:

        async def swagger_ui_redirect(request: Request) -> HTMLResponse:
            return get_swagger_ui_oauth2_redirect_html()

        app.add_route(oauth2_redirect_url, swagger_ui_redirect, include_in_schema=False)

    if redoc_url is not None:

        async def redoc_html(request: Request) -> HTMLResponse:
            root, common = page_args(request, "ReDoc")
            return get_redoc_html(
                **common,
                redoc_js_url=f"{root}{assets_url}/redoc.standalone.js",
                redoc_favicon_url=f"{root}{assets_url}/favicon.png",
                with_google_fonts=False,
            )

        app.add_route(redoc_url, redoc_html, include_in_schema=False)
