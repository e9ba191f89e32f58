"""The ALTCHA challenge route (public, API.md section 10) and the development demo form.

`GET {base}/captcha/challenge` answers a fresh challenge while CAPTCHA=altcha (404 when off).
Outside production `GET {base}/demo/contact` is a tiny contact form using the ALTCHA widget,
served by the service itself (the widget's file comes from a hash-pinned wheel:
scripts/fetch_assets.py), so a newcomer sees the whole flow in a browser with `make run`.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.responses import HTMLResponse, Response

from outreach.core.errors import NotFound, problem_responses
from outreach.core.schemas import json_data
from outreach.state import state_of

STATIC = Path(__file__).resolve().parent.parent / "static"
WIDGET = STATIC / "altcha.min.js"

# The page loads only its own scripts; the widget solves in a worker made from a blob and
# injects its own <style>, hence `blob:` workers and inline styles (no inline scripts).
DEMO_CSP = (
    "default-src 'none'; script-src 'self'; worker-src 'self' blob:; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)

DEMO_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Contact us (outreach demo)</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{base}/demo/demo.css">
<script type="module" src="{base}/demo/altcha.min.js"></script>
<script type="module" src="{base}/demo/demo.js"></script>
</head>
<body>
<main>
<h1>Contact us</h1>
<p class="hint">A demo of the website's contact form: it posts to
<code>{base}/inquiries/submit</code>{captcha_hint}.</p>
<form id="contact" data-submit="{base}/inquiries/submit">
<label>Name <input name="name" required maxlength="120" autocomplete="name"></label>
<label>Email <input name="email" type="email" required maxlength="254" autocomplete="email"></label>
<label>Subject <input name="subject" maxlength="200"></label>
<label>Message <textarea name="message" required maxlength="5000" rows="5"></textarea></label>
<label class="trap" aria-hidden="true">Website
<input name="website" tabindex="-1" autocomplete="off"></label>
{widget}
<button type="submit">Send</button>
<output id="result" role="status"></output>
</form>
</main>
</body>
</html>
"""

WIDGET_TAG = (
    '<altcha-widget challengeurl="{base}/captcha/challenge" auto="onload" hidelogo></altcha-widget>'
)

DEMO_JS = """// The demo form: the fields (and the widget's `altcha` payload) posted as JSON.
const form = document.getElementById("contact");
const result = document.getElementById("result");
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const body = Object.fromEntries(new FormData(form).entries());
  for (const key of Object.keys(body)) if (body[key] === "") delete body[key];
  result.textContent = "Sending…";
  const answer = await fetch(form.dataset.submit, {
    method: "POST",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify(body),
  });
  const data = await answer.json();
  result.dataset.status = String(answer.status);
  result.textContent = answer.ok
    ? `Sent: inquiry ${data.id}`
    : `Not sent (${answer.status}): ${data.detail}`;
});
"""

DEMO_CSS = """body{font:16px/1.5 system-ui,sans-serif;margin:0;color:#1b1f24;background:#f6f7f9}
main{max-width:32rem;margin:0 auto;padding:1.25rem}
label{display:block;margin:.75rem 0}
input,textarea{display:block;width:100%;box-sizing:border-box;padding:.5rem;font:inherit}
button{margin-top:1rem;padding:.6rem 1.4rem;font:inherit}
.trap{position:absolute;left:-10000px}
.hint{color:#57606a;font-size:.9rem}
output{display:block;margin-top:1rem}
"""


class AltchaChallenge(BaseModel):
    """An ALTCHA (v1) challenge; the widget solves it and posts the payload."""

    algorithm: str
    challenge: str
    maxnumber: int
    salt: str
    signature: str


@lru_cache
def _widget() -> bytes | None:
    return WIDGET.read_bytes() if WIDGET.exists() else None


def captcha_router(base_path: str, *, demo: bool) -> APIRouter:
    router = APIRouter(prefix=base_path)

    @router.get(
        "/captcha/challenge",
        tags=["public"],
        summary="Captcha challenge",
        response_model=AltchaChallenge,
        responses=problem_responses(404),
    )
    async def challenge(request: Request) -> Response:
        """A fresh ALTCHA challenge for the public POSTs (public; 404 while CAPTCHA=off)."""
        captcha = state_of(request).captcha
        if not captcha.enabled:
            raise NotFound("The captcha is off")
        response = json_data(captcha.challenge())
        response.headers["Cache-Control"] = "no-store"
        return response

    if not demo:
        return router

    @router.get("/demo/contact", include_in_schema=False)
    async def demo_page(request: Request) -> Response:
        enabled = state_of(request).captcha.enabled
        page = DEMO_PAGE.format(
            base=base_path,
            widget=WIDGET_TAG.format(base=base_path) if enabled else "",
            captcha_hint=", with a proof-of-work captcha" if enabled else " (CAPTCHA=off)",
        )
        return HTMLResponse(page, headers=_page_headers())

    @router.get("/demo/demo.js", include_in_schema=False)
    async def demo_js() -> Response:
        return Response(DEMO_JS, media_type="text/javascript", headers=_page_headers())

    @router.get("/demo/demo.css", include_in_schema=False)
    async def demo_css() -> Response:
        return Response(DEMO_CSS, media_type="text/css", headers=_page_headers())

    @router.get("/demo/altcha.min.js", include_in_schema=False)
    async def widget() -> Response:
        body = _widget()
        if body is None:
            raise NotFound("The widget is missing: run `make setup`")
        return Response(body, media_type="text/javascript", headers=_page_headers())

    return router


def _page_headers() -> dict[str, str]:
    return {
        "Content-Security-Policy": DEMO_CSP,
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }
