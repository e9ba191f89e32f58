"""Outreach: contact-form inquiries and newsletter subscribers."""

__version__ = "0.1.0"
