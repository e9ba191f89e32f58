"""HTML pages for people (API.md section 12): the answer of a mail's link and of the form on
it. Rendered from outreach/templates in the visitor's language, with headers that keep them
to themselves: nothing loads from anywhere (the one inline style allowed by its hash, no
script at all), no framing, no referrer (the token is in the URL), no caching."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse

from outreach.core.errors import OutreachError
from outreach.templates import LOOK_HASH, Language, message, pick_language, render

CSP = (
    "default-src 'none'; "
    f"style-src '{LOOK_HASH}'; "
    "form-action 'self'; "
    "frame-ancestors 'none'; "
    "base-uri 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}
HTML_DOC: dict[int | str, dict[str, Any]] = {
    200: {"description": "A page", "content": {"text/html": {"schema": {"type": "string"}}}},
    404: {
        "description": "The link does not work (unknown, expired or used-up token)",
        "content": {"text/html": {"schema": {"type": "string"}}},
    },
    503: {
        "description": "The database did not answer",
        "content": {"text/html": {"schema": {"type": "string"}}},
    },
}


def language_of(request: Request) -> Language:
    return pick_language(request.headers.get("accept-language"))


def page(
    request: Request,
    *,
    business: str,
    title: str,
    body: str,
    status: int = 200,
    form: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    **values: Any,
) -> HTMLResponse:
    """The page of `title` and `body` (message keys), with an optional one-button form
    (`action`, `token`, `button` key)."""
    language = language_of(request)
    values = {"business": business, **values}
    if form is not None:
        form = {**form, "button": message(language, form["button"], **values)}
    html = render(
        "page.html",
        language,
        business=business,
        title=message(language, title, **values),
        body=message(language, body, **values),
        form=form,
    )
    return HTMLResponse(html, status, headers={**PAGE_HEADERS, **(headers or {})})


def error_page(request: Request, exc: OutreachError, *, business: str) -> HTMLResponse:
    """An error as a page: the link does not work (4xx), or try later (5xx)."""
    if exc.status >= 500:
        title, body = "unavailable_title", "unavailable_body"
    else:
        title, body = "invalid_title", "invalid_body"
    return page(
        request, business=business, title=title, body=body, status=exc.status, headers=exc.headers
    )


def _quality(accept: str, wanted: str) -> float:
    kind, _, _ = wanted.partition("/")
    best, specificity = 0.0, -1
    for item in accept.split(","):
        media, _, params = item.strip().partition(";")
        media = media.strip().lower()
        if media == wanted:
            rank = 2
        elif media == f"{kind}/*":
            rank = 1
        elif media == "*/*":
            rank = 0
        else:
            continue
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if rank > specificity:
            best, specificity = q, rank
    return best


def prefers_html(request: Request) -> bool:
    """Accept ranks text/html above application/json (a browser's form post; a JSON client
    or a bare `*/*` keeps JSON, the API's default)."""
    accept = request.headers.get("accept", "")
    return _quality(accept, "text/html") > _quality(accept, "application/json")
