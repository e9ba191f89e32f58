"""Wire types shared by the domains: camelCase models, string ids, RFC 3339 times, pages."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, date, datetime, time
from typing import Annotated, Any, ClassVar, Generic, Literal, Self, TypeVar

import orjson
from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel
from starlette.responses import Response

from outreach.core.errors import ValidationFailed

MAX_ID = 2**63 - 1
SPECIAL_USE = frozenset(SPECIAL_USE_DOMAIN_NAMES)


def format_time(value: datetime) -> str:
    """RFC 3339, UTC, milliseconds, `Z`: 2026-11-23T10:00:00.000Z."""
    value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return value.isoformat(timespec="milliseconds")[:-6] + "Z"  # strip "+00:00"


IdStr = Annotated[
    int,
    PlainSerializer(str, return_type=str),
    WithJsonSchema(
        {"type": "string", "pattern": "^[0-9]{1,19}$", "examples": ["7266051958845440010"]}
    ),
]
Timestamp = Annotated[
    datetime,
    PlainSerializer(format_time, return_type=str),
    WithJsonSchema(
        {"type": "string", "format": "date-time", "examples": ["2026-11-23T10:00:00.000Z"]}
    ),
]


class OutModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, from_attributes=True)


class InModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=False,
        extra="forbid",
        str_strip_whitespace=True,
    )


# ---- input field types -----------------------------------------------------------------


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL; refuse it as bad input rather than fail on insert.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


# A plain ASCII address that email-validator accepts (a strict subset of what it accepts:
# tests/core/test_email.py draws addresses from this pattern and has the library check each).
# Most addresses take this path, which skips the library's ~0.1 ms of parsing on the public
# POSTs; any other address, valid or not, is the library's to judge.
_PLAIN_EMAIL = re.compile(
    r"[A-Za-z0-9_+]+(?:[.-][A-Za-z0-9_+]+)*"  # local part: no leading, trailing or double dot
    r"@(?:[A-Za-z0-9](?:-?[A-Za-z0-9]){0,40}\.){1,8}"  # labels; "--" never (IDNA's "xn--")
    r"[A-Za-z]{2,24}"  # an alphabetic top-level domain
)


def _plain_email(value: str) -> bool:
    if len(value) > 254 or not _PLAIN_EMAIL.fullmatch(value):
        return False
    local, _, domain = value.partition("@")
    labels = domain.split(".")
    # Labels of at most 63 characters (the pattern's `-?` lets one reach 81); special-use
    # names (RFC 6761: "test", "localhost", ...) are the library's to refuse.
    return (
        len(local) <= 64
        and all(len(label) <= 63 for label in labels)
        and labels[-1].lower() not in SPECIAL_USE
    )


def check_email(value: str) -> str:
    """A valid address (syntax only, no DNS), lower-cased; ValueError otherwise."""
    value = _no_nul(value)
    if len(value) > 254:
        raise ValueError("must be at most 254 characters")
    if not _plain_email(value):
        try:
            validate_email(value, check_deliverability=False, allow_smtputf8=True)
        except EmailNotValidError as exc:
            raise ValueError(f"not a valid email address: {exc}") from None
    return value.lower()


def _empty_to_none(value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        return None
    return value


Text = Annotated[str, AfterValidator(_no_nul)]
Email = Annotated[
    str,
    Field(min_length=3, max_length=254, json_schema_extra={"format": "email"}),
    AfterValidator(check_email),
]
PHONE = re.compile(r"^[0-9 +\-()]{1,32}$")


def check_phone(value: str) -> str:
    if not PHONE.fullmatch(value):
        raise ValueError("only digits, spaces and +-() are allowed")
    return value


# Optional text fields: blank or null is None; the bounds apply to the text only (a
# max_length on the whole `str | None` fails on None with a TypeError, a 500).
OptionalName = Annotated[
    Annotated[str, Field(max_length=120), AfterValidator(_no_nul)] | None,
    BeforeValidator(_empty_to_none),
]
OptionalSubject = Annotated[
    Annotated[str, Field(max_length=200), AfterValidator(_no_nul)] | None,
    BeforeValidator(_empty_to_none),
]
# The solved ALTCHA challenge (the widget's base64 payload), where a form posts it in its body
# rather than the X-Altcha header (API.md section 10); ignored while CAPTCHA=off.
CaptchaPayload = Annotated[
    str | None,
    Field(max_length=4096, description="Solved ALTCHA payload (or the X-Altcha header)"),
]
OptionalReason = Annotated[
    Annotated[str, Field(max_length=200), AfterValidator(_no_nul)] | None,
    BeforeValidator(_empty_to_none),
]
OptionalSource = Annotated[
    Annotated[str, Field(max_length=2048), AfterValidator(_no_nul)] | None,
    BeforeValidator(_empty_to_none),
]
OptionalPhone = Annotated[
    Annotated[str, Field(max_length=32), AfterValidator(_no_nul), AfterValidator(check_phone)]
    | None,
    BeforeValidator(_empty_to_none),
]


def parse_id(raw: str | int) -> int | None:
    """A Snowflake id from the wire; None for anything that cannot be one (answered as 404)."""
    text = str(raw)
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        return None
    value = int(text)
    return value if 0 < value <= MAX_ID else None


# ---- lists --------------------------------------------------------------------------------

Order = Literal["asc", "desc"]
T = TypeVar("T")


class PageMeta(OutModel):
    limit: int
    next_cursor: str | None
    total: int


class Page(OutModel, Generic[T]):
    data: list[T]
    meta: PageMeta


def encode_cursor(last_id: int, order: str) -> str:
    return base64.urlsafe_b64encode(f"{order[0]}{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str, order: str) -> int:
    """The id after which the next page starts; 422 (`cursor`) for anything we did not make."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raw = ""
    last = parse_id(raw[1:]) if len(raw) > 1 else None
    if last is None or raw[0] != order[0]:
        raise ValidationFailed(
            "The cursor is not valid for this list", errors=[("cursor", "invalid cursor")]
        )
    return last


def _date_or_time(value: Any) -> Any:
    # "2026-11-01" is a date (a whole day); anything longer an RFC 3339 time. pydantic's own
    # union would read "2026-11-01T00:00:00Z" as a date, or "2026-11-01" as a midnight.
    if isinstance(value, str):
        text = value.strip()
        if len(text) == 10:
            return date.fromisoformat(text)
        value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if isinstance(value, datetime) and value.tzinfo is not None:
        try:  # 0001-01-01T00:00:00+01:00 is before year 1 in UTC: a 422, not an OverflowError
            return value.astimezone(UTC)
        except OverflowError:
            raise ValueError("must lie within years 1..9999 in UTC") from None
    return value


DateOrTime = Annotated[date | datetime, BeforeValidator(_date_or_time)]


def time_bound(value: date | datetime | None, *, end: bool) -> datetime | None:
    """A list's time filter: a time (UTC when it has no offset), or a date meaning the whole
    day (its start for `createdFrom`, its end for `createdTo`)."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        return datetime.combine(value, time.max if end else time.min, tzinfo=UTC)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def json_data(data: Any, status_code: int = 200) -> Response:
    """Plain data (a serializer's dict) as a JSON answer."""
    return Response(orjson.dumps(data), status_code, media_type="application/json")


def json_response(model: BaseModel, status_code: int = 200) -> Response:
    """A model already validated, serialized once (FastAPI would validate it again)."""
    return Response(
        model.model_dump_json(by_alias=True), status_code, media_type="application/json"
    )


class PatchIn(InModel):
    """A PATCH body: at least one field, and the `non_null` fields may be left out but not
    sent as null. Its JSON schema says so (minProperties 1; those fields not nullable)."""

    non_null: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls.model_config["json_schema_extra"] = _patch_schema(cls.non_null)
        cls.model_rebuild(force=True)

    @model_validator(mode="after")
    def _something(self) -> Self:
        if not self.model_fields_set:
            fields = " and/or ".join(type(self).model_fields)
            raise ValueError(f"give {fields}")
        for name in self.non_null:
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self


def _patch_schema(non_null: tuple[str, ...]) -> Any:
    def extra(schema: dict[str, Any]) -> None:
        schema["minProperties"] = 1
        for name in non_null:
            prop = schema.get("properties", {}).get(name, {})
            options = [o for o in prop.pop("anyOf", []) if o.get("type") != "null"]
            if len(options) == 1:
                prop.update(options[0])

    return extra
