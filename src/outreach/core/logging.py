"""structlog on stdout: one event a line, logfmt (key=value) or JSON, with the request id."""

from __future__ import annotations

import asyncio
import datetime
import logging
import sys
from dataclasses import dataclass
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


def _level_filter(minimum: int) -> Processor:
    def keep(_: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
        if _LEVELS.get(method, logging.INFO) < minimum:
            raise structlog.DropEvent
        return event_dict

    return keep


_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
}


class _NamedWriteLogger(structlog.WriteLogger):
    """structlog's plain writer, with the `name` that add_logger_name reads."""

    def __init__(self, file: TextIO, name: str) -> None:
        super().__init__(file)
        self.name = name


@dataclass(frozen=True, slots=True)
class _FastLine:
    """What `info_line` needs to write a line as the configured processors would."""

    processors: list[Processor]  # the configuration this was made for (see `_current`)
    count: int
    renderer: Processor
    minimum: int
    stream: TextIO
    writers: dict[str, _NamedWriteLogger]
    logfmt: bool
    flushing: list[bool]  # a flush of `stream` is scheduled on the event loop


_fast: _FastLine | None = None
_UTC = datetime.UTC


def _current(fast: _FastLine) -> bool:
    """Whether structlog still runs the processors `fast` was made for: the same list
    (configure() replaces it), the same length and renderer (capture_logs edits it in place)."""
    processors = structlog.get_config()["processors"]
    return (
        processors is fast.processors
        and len(processors) == fast.count
        and processors[-1] is fast.renderer
    )


def info_line(logger: str, msg: str, fields: dict[str, Any]) -> None:
    """One info event of ours, written as `structlog.get_logger(logger).info(msg, **fields)`
    writes it, without the processor chain (an access line per request: the chain, a bound
    logger and a writer made per call cost ~15 % of a `/healthz`). The event dict is built in
    the order the chain leaves it, then given to the same renderer and writer, so the line is
    the same (tests/core/test_logging.py compares them). Under any other configuration
    (structlog.testing.capture_logs, a reconfiguration) the call goes through structlog.

    For events with no field the chain would change: no key of `_REDACT`, no `exception`,
    no `_event`; nothing of ours binds structlog contextvars.
    """
    fast = _fast
    if fast is None or not _current(fast):
        structlog.get_logger(logger).info(msg, **fields)
        return
    if fast.minimum > logging.INFO:
        return
    writer = fast.writers.get(logger)
    if writer is None:
        writer = fast.writers[logger] = _NamedWriteLogger(fast.stream, logger)
    event = dict(fields)
    rid = request_id_var.get()
    if rid != "-":
        event.setdefault("requestId", rid)
    event["level"] = "info"
    event["logger"] = logger
    event["timestamp"] = datetime.datetime.now(tz=_UTC).isoformat().replace("+00:00", "Z")
    event["msg"] = msg
    writer.msg(fast.renderer(writer, "info", event))  # type: ignore[arg-type]


_PLAIN: dict[str, bool] = {}


def _plain(value: str) -> bool:
    """Whether logfmt writes `value` as it is (no quoting or escaping)."""
    return not any(c in value for c in ' ="\\\n')


def _flush(fast: _FastLine) -> None:
    fast.flushing[0] = False
    fast.stream.flush()


def access_line(method: str, route: str, status: int, duration_ms: float) -> None:
    """The access line of a request (`outreach.access`, `request`, method, route, status,
    durationMs, with the request id), as `info_line` writes it; in logfmt formatted here
    directly and flushed once per turn of the event loop rather than once per line (under
    load many lines share one write). tests/http/test_hotpath.py compares it with structlog's.
    """
    fast = _fast
    rid = request_id_var.get()
    if fast is None or not fast.logfmt or not _current(fast):
        info_line(
            "outreach.access",
            "request",
            {"method": method, "route": route, "status": status, "durationMs": duration_ms},
        )
        return
    if fast.minimum > logging.INFO:
        return
    key = method + " " + route
    plain = _PLAIN.get(key)
    if plain is None:
        plain = _plain(method) and _plain(route)
        if len(_PLAIN) < 1000:  # the hot routes' few; any other is checked each time
            _PLAIN[key] = plain
    if not plain or not _plain(rid):
        info_line(
            "outreach.access",
            "request",
            {"method": method, "route": route, "status": status, "durationMs": duration_ms},
        )
        return
    now = datetime.datetime.now(tz=_UTC).isoformat().replace("+00:00", "Z")
    fast.stream.write(
        f"timestamp={now} level=info msg=request"
        + ("" if rid == "-" else f" requestId={rid}")
        + f" method={method} route={route} status={status} durationMs={duration_ms}"
        " logger=outreach.access\n"
    )
    if not fast.flushing[0]:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            fast.stream.flush()
            return
        fast.flushing[0] = True
        loop.call_soon(_flush, fast)


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
    numeric = getattr(logging, level.upper(), logging.INFO)
    out = stream or sys.stdout
    final: list[Processor] = [
        structlog.processors.format_exc_info,
        _one_line,
        # The message is `msg`, so that `event` can be a field (API.md section 6: the
        # realtime warning's `event`); log calls pass that field as `_event`.
        structlog.processors.EventRenamer("msg", "_event"),
        renderer,
    ]
    # Our own events go straight to stdout (no standard-library logging machinery on the hot
    # path: an access line per request); the standard library's records go through the same
    # processors and renderer via ProcessorFormatter.
    processors = [_level_filter(numeric), *shared, *final]
    structlog.configure(
        # The level is a processor (not the wrapper) so structlog.testing.capture_logs, which
        # replaces the processors, sees every event.
        processors=processors,
        logger_factory=lambda *args: _NamedWriteLogger(out, str(args[0]) if args else "outreach"),
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        # Not cached: tests (structlog.testing.capture_logs) and reconfiguration must take effect.
        cache_logger_on_first_use=False,
    )
    global _fast
    _fast = _FastLine(
        processors, len(processors), renderer, numeric, out, {}, fmt != "json", [False]
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder(), _drop_color_message],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    for name in ("uvicorn", "uvicorn.error", "sqlalchemy", "alembic", "socketio", "engineio"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    # Our middleware writes the access line (with the route template and request id).
    logging.getLogger("uvicorn.access").disabled = True
    # Libraries log at warning and above at every level, `debug` included: at debug
    # SQLAlchemy and aiosqlite log statements with their parameters and rows, engine.io and
    # httpx log payloads and URLs, so tokens and personal data would reach the log
    # (API.md section 8). LOG_LEVEL=debug is for the service's own events.
    logging.captureWarnings(True)  # warnings become one-line log events too
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))


QUIET_LIBRARIES = (
    "sqlalchemy",
    "aiosqlite",
    "asyncpg",
    "socketio",
    "engineio",
    "websockets",
    "httpx",
    "httpcore",
    "casbin",
    "alembic.runtime.plugins",
    "multipart",
    "python_multipart",
)
