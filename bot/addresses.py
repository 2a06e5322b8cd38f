"""Email addresses as the list keys them: syntax checked, one spelling per subscriber.

A leaf: the list, the web form, the bounce reader and `digest send --to` all check an address
the same way.
"""

from __future__ import annotations

from email_validator import EmailNotValidError, validate_email


def normalise_email(text: str) -> str:
    """Trim, check the syntax, lower-case the domain; the local part is kept as written.

    Raises ValueError with a message a user can act on. Deliverability (DNS) is not checked:
    that needs the network and says little; bounces tell the truth later.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("an email address is required")
    candidate = text.strip()
    try:
        result = validate_email(candidate, check_deliverability=False)
    except EmailNotValidError as error:
        raise ValueError(f"{candidate!r} is not a valid email address: {error}") from None
    return f"{result.local_part}@{result.domain.lower()}"


def address_key(address: str) -> str:
    """The one key of an address: providers treat the local part case-insensitively too."""
    return address.lower()
