"""structlog on stdout: one event a line, logfmt (key=value) or JSON, with the request id."""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from outreach.core.context import request_id_var

# Keys whose values never reach a log line, wherever they come from.
_REDACT = frozenset({"token", "password", "authorization", "secret", "unsubscribe_token"})


def _add_request_id(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    rid = request_id_var.get()
    if rid != "-":
        event_dict.setdefault("requestId", rid)
    return event_dict


def _redact(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    for key in event_dict.keys() & _REDACT:
        event_dict[key] = "[redacted]"
    return event_dict


def _drop_color_message(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    event_dict.pop("color_message", None)  # uvicorn's ANSI-coloured copy of the message
    return event_dict


def _one_line(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    exc = event_dict.get("exception")
    if isinstance(exc, str):
        event_dict["exception"] = exc.replace("\n", "\\n")
    return event_dict


def _json_dumps(obj: Any, **_: Any) -> str:
    return orjson.dumps(obj, default=str).decode()


def configure_logging(
    level: str = "info", fmt: str = "logfmt", stream: TextIO | None = None
) -> None:
    """Route structlog and the standard library (uvicorn, SQLAlchemy, alembic) to one renderer."""
    renderer: Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(serializer=_json_dumps)
    else:
        renderer = structlog.processors.LogfmtRenderer(
            key_order=["timestamp", "level", "msg", "requestId"], drop_missing=True
        )
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        _add_request_id,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: tests (structlog.testing.capture_logs) and reconfiguration must take effect.
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder(), _drop_color_message],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _one_line,
            # The message is `msg`, so that `event` can be a field (API.md section 6: the
            # realtime warning's `event`); log calls pass that field as `_event`.
            structlog.processors.EventRenamer("msg", "_event"),
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    numeric = getattr(logging, level.upper(), logging.INFO)
    root.setLevel(numeric)
    for name in ("uvicorn", "uvicorn.error", "sqlalchemy", "alembic", "socketio", "engineio"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    # Our middleware writes the access line (with the route template and request id).
    logging.getLogger("uvicorn.access").disabled = True
    # Library chatter stays at warning unless debugging.
    quiet = logging.DEBUG if numeric <= logging.DEBUG else logging.WARNING
    logging.captureWarnings(True)  # warnings become one-line log events too
    for name in (
        "sqlalchemy.engine",
        "socketio",
        "engineio",
        "httpx",
        "httpcore",
        "casbin",
        "alembic.runtime.plugins",
    ):
        logging.getLogger(name).setLevel(quiet)
