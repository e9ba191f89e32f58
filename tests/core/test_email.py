"""Email addresses: the plain-ASCII fast path accepts only what email-validator accepts."""

from __future__ import annotations

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from outreach.core.schemas import _PLAIN_EMAIL, _plain_email
from outreach.core.schemas import check_email as _email


def library_accepts(value: str) -> bool:
    try:
        validate_email(value, check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError:
        return False
    return True


@settings(max_examples=250, deadline=None)
@given(st.from_regex(_PLAIN_EMAIL, fullmatch=True))
def test_every_address_the_fast_path_takes_is_one_the_library_accepts(value: str) -> None:
    if _plain_email(value):
        assert library_accepts(value), value
        assert _email(value) == value.lower()


@pytest.mark.parametrize(
    "value",
    [
        "a@b.co",
        "Nguyen.Van-An+shop@Example.COM",
        "customer_12@mail.shop.example.vn",
        "x@" + "a" * 41 + ".com",
    ],
)
def test_common_addresses_take_the_fast_path(value: str) -> None:
    assert _plain_email(value)
    assert _email(value) == value.lower()


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("someone@localhost", False),
        ("someone@shop.test", False),
        ("someone@xn--d1acufc.xn--p1ai", True),  # IDNA labels: the library's to check
        ("someone@ab--cd.com", False),
        ("thư@ví-dụ.vn", True),  # internationalized: the library decides
        ("a..b@example.com", False),
        (".a@example.com", False),
        ("a@example.123", False),
        ("a" * 65 + "@example.com", True),  # a local part over 64: the library allows it
        ("x@" + "a-" * 40 + "a.com", False),  # an 81-character label: over 63
        ('"quoted local"@example.com', False),
    ],
)
def test_other_addresses_are_the_librarys_to_judge(value: str, valid: bool) -> None:
    assert not _plain_email(value)
    assert library_accepts(value) is valid
    if valid:
        assert _email(value) == value.lower()
    else:
        with pytest.raises(ValueError, match="valid email"):
            _email(value)
