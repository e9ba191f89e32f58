"""Text helpers shared by the domains: search keys that work for Vietnamese and any Unicode."""

from __future__ import annotations

import unicodedata


def search_key(*parts: str | None) -> str:
    """Case-folded NFC text for substring search; the same on PostgreSQL and SQLite."""
    joined = "\n".join(p for p in parts if p)
    return unicodedata.normalize("NFC", joined).casefold()


def like_pattern(query: str) -> str:
    """A LIKE pattern matching `query` anywhere, with LIKE's wildcards escaped (ESCAPE '\\')."""
    folded = search_key(query)
    escaped = folded.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"
