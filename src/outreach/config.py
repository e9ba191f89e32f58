"""Settings from the environment (API.md section 8), with `_FILE` variants for mounted secrets."""

from __future__ import annotations

import base64
import ipaddress
import os
import re
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from outreach.ids.snowflake import parse_worker_id

# Variables that may instead name a file holding the value (Kubernetes Secret mounts).
SECRET_VARIABLES = (
    "DATABASE_URL",
    "REDIS_URL",
    "DATABASE_PASSWORD",
    "REDIS_PASSWORD",
    "TOKEN_SECRET",
    "ALTCHA_HMAC_KEY",
    "SMTP_URL",
)
# Outside production, links in exports and mails point here unless PUBLIC_BASE_URL is set.
DEVELOPMENT_BASE_URL = "http://127.0.0.1:3000"

# Plain syntax check of configured addresses (visitors' addresses are checked by
# email-validator in core/schemas.py).
_ADDRESS = re.compile(r"[^@\s<>(),;:\"\[\]]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*")
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(second|minute|hour|day)\s*$")


class ConfigError(Exception):
    """Raised for a configuration the service refuses to start with; the message is one line."""


def _read_secret_files(values: dict[str, Any]) -> dict[str, Any]:
    for name in SECRET_VARIABLES:
        file_var = f"{name}_FILE"
        path = os.environ.get(file_var)
        key = name.lower()
        if path and not values.get(key):
            try:
                values[key] = Path(path).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ValueError(f"{file_var}={path} cannot be read: {exc.strerror}") from None
    return values


def _with_password(url: str, password: SecretStr | None) -> str:
    """Put a separately supplied password into a URL that has none."""
    if not password or not url:
        return url
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    userinfo, _, host = rest.rpartition("@")
    if ":" in userinfo:
        return url
    from urllib.parse import quote

    return f"{scheme}://{userinfo}:{quote(password.get_secret_value(), safe='')}@{host}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", env_file=None)

    app_env: Literal["development", "production", "test"] = "development"
    app_env_node_id: str = "10"
    base_path: str = "/v1/api/outreach"
    host: str = "127.0.0.1"
    port: int = Field(default=3000, ge=1, le=65535)

    database_url: SecretStr | None = None
    database_password: SecretStr | None = None
    redis_url: SecretStr | None = None
    redis_password: SecretStr | None = None

    jwks_url: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None

    metrics_enabled: bool = False
    # Worker processes of `outreach serve` (its --workers default; the command sets it for its
    # workers). Above 1, Socket.IO is WebSocket-only: a long-polling session's requests would
    # land on any worker of the pod (docs/realtime.md, "Several workers per pod").
    web_concurrency: int = Field(default=1, ge=1, le=64)
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    log_format: Literal["logfmt", "json"] = "logfmt"

    cors_allow_origins: Annotated[list[str], NoDecode] = []
    trusted_proxies: Annotated[list[str], NoDecode] = []
    # Origin of the links the service hands out (export, mails); required in production.
    public_base_url: str | None = None
    app_timezone: str = "UTC"
    rate_limit_public: str | None = None
    # Server secret(s) that unsubscribe/confirm tokens are derived from (comma list: the
    # first one makes, every one is accepted). Required in production; outside it a local
    # secret is kept under VAR_DIR (subscribers/tokens.py).
    token_secret: SecretStr | None = None
    # Proof-of-work on the public POSTs (API.md section 10): `altcha`, or `off`.
    captcha: Literal["off", "altcha"] = "off"
    altcha_hmac_key: SecretStr | None = None
    # Webhook URLs on loopback/private addresses and plain http (development and tests only;
    # honoured whatever APP_ENV is, API.md section 13).
    webhook_allow_private: bool = False

    # Mail (API.md section 12). SMTP_URL may hold a password: SecretStr, `_FILE` form.
    # Unset outside production, mails are written as .eml files under VAR_DIR/outbox/.
    smtp_url: SecretStr | None = None
    mail_from: str = "Outreach <no-reply@localhost>"
    subscribe_confirmation: Literal["single", "double"] = "single"
    inquiry_notify_to: Annotated[list[str], NoDecode] = []
    inquiry_ack: bool = False
    # The business's name in mails and pages; by default MAIL_FROM's display name.
    business_name: str | None = None
    # The language of the staff notifications (visitors get theirs from Accept-Language).
    staff_language: Literal["vi", "en"] = "vi"

    # Personal data of inquiries older than this many days is erased by a daily job
    # (API.md section 14); unset: kept. The interval is a setting for tests.
    inquiry_retention_days: int | None = Field(default=None, ge=1, le=36_500)
    retention_interval_seconds: float = Field(default=86_400.0, ge=0.1)

    # Where local state lives in development: the SQLite file and the development signing key.
    var_dir: Path = Path("var")
    # Database pool size per process (PostgreSQL).
    db_pool_size: int = Field(default=10, ge=1, le=200)
    # How long shutdown waits for in-flight requests before closing connections.
    shutdown_drain_seconds: float = Field(default=20.0, ge=0, le=300)
    # After SIGTERM, how long /readyz answers 503 (and answers carry Connection: close) before
    # the server stops accepting and drains: 0 in development; a few seconds in Kubernetes
    # without a preStop sleep. docs/operations.md#graceful-shutdown.
    shutdown_ready_delay_seconds: float = Field(default=0.0, ge=0, le=60)
    # Lease of the Snowflake worker id in Redis (ids/leases.py); short values are for tests.
    worker_lease_ttl_seconds: float = Field(default=30.0, ge=0.5, le=600)
    # A job whose worker's heartbeat is older than this is taken over by another worker (a
    # process killed mid-job); short values are for tests.
    jobs_heartbeat_timeout_seconds: float = Field(default=30.0, ge=1, le=600)
    # Whether `outreach serve` works the job queue in each of its processes (the default);
    # false where `outreach worker` processes do it apart.
    jobs_worker: bool = True

    @model_validator(mode="before")
    @classmethod
    def _secret_files(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return _read_secret_files(data)
        return data

    @field_validator("log_level", "log_format", "app_env", "captcha", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("cors_allow_origins", "trusted_proxies", "inquiry_notify_to", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("inquiry_notify_to")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for item in value:
            if not _ADDRESS.fullmatch(item):
                raise ValueError(f"INQUIRY_NOTIFY_TO: {item!r} is not an email address")
        return [item.lower() for item in value]

    @field_validator("mail_from")
    @classmethod
    def _mail_from(cls, value: str) -> str:
        from email.headerregistry import Address
        from email.utils import parseaddr

        name, address = parseaddr(value.strip())
        if not _ADDRESS.fullmatch(address):
            raise ValueError("MAIL_FROM must be an address, such as Shop <no-reply@shop.example>")
        return str(Address(display_name=name, addr_spec=address))

    @field_validator("subscribe_confirmation", "staff_language", mode="before")
    @classmethod
    def _lower_choice(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        raw = value.get_secret_value().strip()
        if not re.fullmatch(r"smtps?://[^/?#\s]+(\?[^#\s]*)?", raw):
            # The value may hold a password: never repeated in the message.
            raise ValueError(
                "SMTP_URL must look like smtp://user:pass@host:587, smtps://host:465 or "
                "smtp://host:25?tls=off"
            )
        return SecretStr(raw)

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            ipaddress.ip_network(item, strict=False)
        return value

    @field_validator("base_path")
    @classmethod
    def _base_path(cls, value: str) -> str:
        value = "/" + value.strip().strip("/")
        if not re.fullmatch(r"(/[A-Za-z0-9._~-]+)+", value):
            raise ValueError("BASE_PATH must be a path such as /v1/api/outreach")
        return value

    @field_validator("public_base_url")
    @classmethod
    def _public_base_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip().rstrip("/")
        if not re.fullmatch(r"https?://[^/?#\s]+(/[^?#\s]*)?", value):
            raise ValueError(
                "PUBLIC_BASE_URL must be an http(s) origin such as https://shop.example"
            )
        return value

    @field_validator("app_env_node_id")
    @classmethod
    def _node_id(cls, value: str) -> str:
        parse_worker_id(value)
        return value.strip().lower()

    @field_validator("app_timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"APP_TIMEZONE {value!r} is not an IANA time zone") from None
        return value

    @field_validator("rate_limit_public")
    @classmethod
    def _rate(cls, value: str | None) -> str | None:
        if value is None or not value.strip() or value.strip().lower() in {"off", "false", "0"}:
            return None
        if not _RATE.match(value):
            raise ValueError("RATE_LIMIT_PUBLIC must look like 20/minute (second|minute|hour|day)")
        return value.strip()

    # Derived values -----------------------------------------------------------------------

    @property
    def production(self) -> bool:
        return self.app_env == "production"

    @property
    def worker_id(self) -> int | Literal["auto"]:
        return parse_worker_id(self.app_env_node_id)

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL in SQLAlchemy's async form (asyncpg or aiosqlite)."""
        if self.database_url is None:
            return f"sqlite+aiosqlite:///{(self.var_dir / 'outreach.db').as_posix()}"
        url = _with_password(self.database_url.get_secret_value(), self.database_password)
        for prefix in ("postgresql://", "postgres://", "postgresql+asyncpg://"):
            if url.startswith(prefix):
                return "postgresql+asyncpg://" + url[len(prefix) :]
        if url.startswith("sqlite"):
            return url.replace("sqlite://", "sqlite+aiosqlite://", 1) if "+" not in url else url
        raise ValueError("DATABASE_URL must be postgresql://... or sqlite:///...")

    @property
    def redis_dsn(self) -> str | None:
        if self.redis_url is None or not self.redis_url.get_secret_value():
            return None
        return _with_password(self.redis_url.get_secret_value(), self.redis_password)

    @property
    def public_url(self) -> str:
        """PUBLIC_BASE_URL, or the development default outside production."""
        return self.public_base_url or DEVELOPMENT_BASE_URL

    @property
    def token_secrets(self) -> list[bytes]:
        """TOKEN_SECRET's secrets, the one that makes tokens first; empty when unset."""
        if self.token_secret is None:
            return []
        raw = self.token_secret.get_secret_value()
        return [part.strip().encode() for part in raw.split(",") if part.strip()]

    @property
    def business(self) -> str:
        """BUSINESS_NAME, or MAIL_FROM's display name, or "Outreach"."""
        from email.utils import parseaddr

        return self.business_name or parseaddr(self.mail_from)[0] or "Outreach"

    @property
    def sends_mail(self) -> bool:
        """Whether anything here sends mail (and so needs SMTP_URL in production)."""
        return bool(
            self.inquiry_notify_to or self.inquiry_ack or self.subscribe_confirmation == "double"
        )

    @property
    def is_postgres(self) -> bool:
        return self.sqlalchemy_url.startswith("postgresql")

    def check_production(self) -> None:
        """Refuse the embedded development defaults in production."""
        if not self.production:
            return
        required: list[tuple[str, object]] = [
            ("DATABASE_URL", self.database_url),
            ("JWKS_URL", self.jwks_url),
            ("JWT_ISSUER", self.jwt_issuer),
            ("JWT_AUDIENCE", self.jwt_audience),
            ("PUBLIC_BASE_URL", self.public_base_url),
            ("TOKEN_SECRET", self.token_secrets),
        ]
        if self.captcha == "altcha":
            required.append(("ALTCHA_HMAC_KEY", self.altcha_hmac_key))
        missing = [name for name, value in required if not value]
        if not missing and self.sends_mail and self.smtp_url is None:
            # Without SMTP_URL, mails would go to .eml files nobody reads.
            raise ConfigError(
                "APP_ENV=production sends mail (SUBSCRIBE_CONFIRMATION=double, "
                "INQUIRY_NOTIFY_TO or INQUIRY_ACK=true) only through SMTP_URL: set it"
            )
        if missing:
            raise ConfigError(
                "APP_ENV=production refuses the embedded defaults: set "
                + ", ".join(missing[:-1])
                + (" and " if len(missing) > 1 else "")
                + missing[-1]
            )


@lru_cache(maxsize=16)
def local_secret(var_dir: Path, name: str) -> bytes:
    """VAR_DIR/<name>: a secret of 32 random bytes in base64, made once with mode 0600, for
    what production configures (TOKEN_SECRET, ALTCHA_HMAC_KEY) when running without it."""
    path = var_dir / name
    if not path.exists():
        var_dir.mkdir(parents=True, exist_ok=True)
        # A temporary name, then a link that fails if another process won: one secret each.
        tmp = path.with_name(f"{name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(base64.b64encode(secrets.token_bytes(32)) + b"\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    secret = path.read_bytes().strip()
    if len(secret) < 32:  # an emptied or truncated file must not become a guessable key
        raise ConfigError(f"{path} holds no usable secret: delete it to make a new one")
    return secret


@lru_cache
def get_settings() -> Settings:
    return Settings()


def load_settings() -> Settings:
    """Settings for a process about to start: one clear line on any problem."""
    try:
        settings = get_settings()
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        errors = getattr(exc, "errors", None)
        if callable(errors):
            parts = [f"{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in errors()]
            raise ConfigError("invalid configuration: " + "; ".join(parts)) from None
        raise ConfigError(f"invalid configuration: {exc}") from None
    settings.check_production()
    return settings
