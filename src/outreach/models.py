"""Every table, imported in one place for Alembic and the tests."""

from outreach.auth.models import CasbinRule
from outreach.idempotency.models import IdempotencyKey
from outreach.db.base import Base
from outreach.inquiries.models import Inquiry
from outreach.subscribers.models import Subscriber

__all__ = ["Base", "CasbinRule", "IdempotencyKey", "Inquiry", "Subscriber"]
