"""The HTML and text the service shows people: mails and the pages behind their links.

Jinja2, autoescaped for HTML (a visitor's text is never markup), a text twin for every mail,
Vietnamese (the default) and English (messages.py). Mails and pages share one look
(look.css, inlined: pages load nothing, not even from their own origin, and their CSP allows
exactly this style by its hash).
"""

from __future__ import annotations

import base64
import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from outreach.templates.messages import LANGUAGES, Language, message, pick_language

HERE = Path(__file__).resolve().parent
LOOK = (HERE / "look.css").read_text(encoding="utf-8").strip()
# For the pages' Content-Security-Policy: style-src allows this block and nothing else.
LOOK_HASH = "sha256-" + base64.b64encode(hashlib.sha256(LOOK.encode()).digest()).decode()


@lru_cache(maxsize=1)
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE),
        autoescape=select_autoescape(["html"], default_for_string=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.globals["look"] = Markup(LOOK)
    return env


def render(name: str, language: Language, **context: Any) -> str:
    """Template `name` in `language`; `_("key", ...)` in it gives that language's message."""

    def translate(key: str, **values: Any) -> str:
        return message(language, key, **values)

    return environment().get_template(name).render(_=translate, lang=language, **context)


def mask_email(address: str) -> str:
    """`b•••@example.com`: enough for its owner to recognize, little for anyone else."""
    local, _, domain = address.rpartition("@")
    return f"{local[:1]}\u2022\u2022\u2022@{domain}"


__all__ = ["LANGUAGES", "LOOK_HASH", "Language", "mask_email", "message", "pick_language", "render"]
