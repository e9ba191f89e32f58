"""OpenAPI document and the Scalar reference page, served with no internet access."""

from __future__ import annotations

import gzip
import hashlib
from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse, JSONResponse, Response

STATIC = Path(__file__).resolve().parent.parent / "static"
BUNDLE = STATIC / "scalar.standalone.js"


@lru_cache
def _bundle() -> tuple[bytes, bytes, str] | None:
    if not BUNDLE.exists():
        return None
    raw = BUNDLE.read_bytes()
    return raw, gzip.compress(raw, 6), hashlib.sha256(raw).hexdigest()[:12]


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Outreach API reference</title>
<link rel="icon" href="data:,">
</head>
<body>
<div id="app"></div>
<script src="{bundle}"></script>
<script>
Scalar.createApiReference('#app', {{
  url: '{spec}',
  withDefaultFonts: false,
  defaultOpenAllTags: true,
  hideClientButton: false,
  telemetry: false
}})
</script>
</body>
</html>
"""

MISSING = """<!doctype html><html><head><meta charset="utf-8"><title>Outreach API</title></head>
<body><p>The Scalar bundle is missing: run <code>make setup</code>.
The OpenAPI document is at <a href="{spec}">{spec}</a>.</p></body></html>"""


def docs_router(base_path: str) -> APIRouter:
    router = APIRouter(prefix=f"{base_path}/doc", include_in_schema=False)
    spec_url = f"{base_path}/doc/openapi.json"

    @router.get("/openapi.json")
    async def openapi(request: Request) -> Response:
        return JSONResponse(request.app.openapi())

    @router.get("")
    async def page() -> Response:
        bundle = _bundle()
        if bundle is None:
            return HTMLResponse(MISSING.format(spec=spec_url), status_code=503)
        src = f"{base_path}/doc/scalar.standalone.js?v={bundle[2]}"
        return HTMLResponse(PAGE.format(bundle=src, spec=spec_url))

    @router.get("/scalar.standalone.js")
    async def script(request: Request) -> Response:
        bundle = _bundle()
        if bundle is None:
            return Response(status_code=404)
        headers = {
            "Cache-Control": "public, max-age=31536000, immutable",
            "Vary": "Accept-Encoding",
        }
        if "gzip" in request.headers.get("accept-encoding", ""):
            headers["Content-Encoding"] = "gzip"
            return Response(bundle[1], media_type="text/javascript", headers=headers)
        return Response(bundle[0], media_type="text/javascript", headers=headers)

    return router
