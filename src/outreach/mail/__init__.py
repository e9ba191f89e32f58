"""Outbound mail (API.md section 12): a Mailer that job handlers call.

The domains compose their mails (inquiries/jobs.py, subscribers/jobs.py: the rows, the
templates of outreach/templates/) and hand a `Mail` to `Mailer.send`, which keeps the
per-address limits, sends each mail once (by its key), and raises the jobs' RetryLater or
GiveUp on failure. Transports: SMTP (aiosmtplib; transport.py) or the development outbox.
"""

from outreach.mail.mailer import Mail, Mailer, address_hash, one_line, visitor_address
from outreach.mail.transport import OutboxTransport, SmtpTransport, SmtpUrl, Transport

__all__ = [
    "Mail",
    "Mailer",
    "OutboxTransport",
    "SmtpTransport",
    "SmtpUrl",
    "Transport",
    "address_hash",
    "one_line",
    "visitor_address",
]
