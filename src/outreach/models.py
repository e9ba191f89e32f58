"""The schema as a whole: every table (for Alembic and the tests), every seed, and
`migrate`, which brings a database to it (`outreach migrate`)."""

from outreach.auth.models import CasbinRule
from outreach.auth.permissions import seed_policy
from outreach.blocklist.models import BlocklistEntry
from outreach.captcha.models import CaptchaSpent
from outreach.config import Settings
from outreach.db import migrate as _migrate
from outreach.db.base import Base
from outreach.db.migrate import Seed
from outreach.idempotency.models import IdempotencyKey
from outreach.inquiries.models import Inquiry, InquiryComment, InquiryHistory
from outreach.mail.models import MailLimit, MailLog
from outreach.subscribers.models import Subscriber
from outreach.webhooks.models import WebhookDelivery, WebhookEndpoint, WebhookMessage

SEEDS: tuple[Seed, ...] = (seed_policy,)


async def migrate(settings: Settings, *, seed_only: bool = False) -> int:
    """Migrations to head, then every seed, in one transaction; the rows the seeds added."""
    return await _migrate.migrate(settings, SEEDS, seed_only=seed_only)


__all__ = [
    "SEEDS",
    "Base",
    "BlocklistEntry",
    "CaptchaSpent",
    "CasbinRule",
    "IdempotencyKey",
    "Inquiry",
    "InquiryComment",
    "InquiryHistory",
    "MailLimit",
    "MailLog",
    "Subscriber",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookMessage",
    "migrate",
]
