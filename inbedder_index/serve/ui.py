"""The explorer page's files (``/ui/``), shipped in the package: no build step, nothing fetched at run time.

The files hold no data: a browser cannot send an ``Authorization`` header when it navigates to
a page, so they are served to anyone, like ``/healthz``. The page asks for the API key, keeps
it in the tab's ``sessionStorage`` and sends it as ``Authorization: Bearer`` with every request
it makes, all of them to the API routes, which refuse a missing or wrong key. The Content
Security Policy lets the page load and call nothing but this server.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response

FILES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
         "app.css": "text/css; charset=utf-8"}
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                               "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def ui_router() -> APIRouter:
    """``GET /ui/`` (the page) and ``GET /ui/app.js``, ``/ui/app.css``; ``/ui`` redirects to ``/ui/``."""
    static = resources.files(__package__) / "static"
    bodies = {name: (static / name).read_bytes() for name in FILES}  # read once: a missing file fails at start
    router = APIRouter()

    def page_file(name: str) -> Response:
        return Response(bodies[name], media_type=FILES[name], headers=HEADERS)

    @router.get("/ui", include_in_schema=False)
    async def ui_root() -> RedirectResponse:
        return RedirectResponse("ui/", status_code=308)  # relative: works behind a path prefix too

    @router.get("/ui/", include_in_schema=False)
    async def ui_page() -> Response:
        return page_file("index.html")

    @router.get("/ui/app.js", include_in_schema=False)
    async def ui_script() -> Response:
        return page_file("app.js")

    @router.get("/ui/app.css", include_in_schema=False)
    async def ui_style() -> Response:
        return page_file("app.css")

    return router
