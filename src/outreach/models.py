"""Every table, imported in one place for Alembic and the tests."""

from outreach.auth.models import CasbinRule
from outreach.core.models import IdempotencyKey
from outreach.db import Base
from outreach.inquiries.models import Inquiry
from outreach.subscribers.models import Subscriber

__all__ = ["Base", "CasbinRule", "IdempotencyKey", "Inquiry", "Subscriber"]
