"""Where SMS and email codes may go: phone numbers and email addresses parsed and normalised.

The only module that parses them (phonenumbers, email-validator).
"""

from __future__ import annotations

from email.errors import HeaderParseError
from email.headerregistry import Address

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from domain.errors import DomainError
from domain.oob_codes import EMAIL, SMS


class InvalidDestinationError(DomainError):
    """A phone number or email address that cannot receive codes (names the field)."""

    code = "validation_error"


# Texts cost the sender money, and a premium-rate number pays whoever owns it (SMS pumping,
# toll fraud): only numbers that are, or may be, a phone line a person holds are accepted
# (FIXED_LINE_OR_MOBILE is where the numbering plan cannot tell, as in all of +1; a fixed line
# is charged the ordinary rate and some take texts). Refused: premium-rate, shared-cost,
# toll-free, personal, pager, UAN and voicemail numbers, and VoIP, which proves possession of
# no device (NIST SP 800-63B 5.1.3.1 excludes it from out-of-band channels) and is what
# pumping turns to once premium rates are closed.
SMS_NUMBER_TYPES = frozenset(
    {
        phonenumbers.PhoneNumberType.MOBILE,
        phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
        phonenumbers.PhoneNumberType.FIXED_LINE,
    }
)
# Country calling codes of no country (+800, +808, +870 Inmarsat, +881 satellite, +882/+883
# international networks, +979): phonenumbers calls some of them MOBILE, yet a text to one
# costs many times an ordinary one, and they are what SMS pumping turns to next.
NON_GEOGRAPHIC_REGION = "001"


def normalise_phone_number(raw: str) -> str:
    """An international number (`+` and country code) of a mobile or fixed line, in E.164, or
    InvalidDestinationError."""
    try:
        number = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException:
        raise InvalidDestinationError(
            "phone_number: not a phone number in international format (like +14155550123)"
        ) from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidDestinationError("phone_number: not a valid phone number")
    non_geographic = phonenumbers.region_code_for_number(number) == NON_GEOGRAPHIC_REGION
    if non_geographic or phonenumbers.number_type(number) not in SMS_NUMBER_TYPES:
        raise InvalidDestinationError(
            "phone_number: codes are only sent to mobile and fixed-line numbers of a country "
            "(not premium-rate, toll-free, VoIP, satellite or other special numbers)"
        )
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalise_email(raw: str) -> str:
    """A syntactically valid address (no DNS lookups) with a plain ASCII local part that the
    mail library reads back unchanged; the domain normalised, an international one in its
    ASCII (IDNA) form."""
    try:
        valid = validate_email(raw, check_deliverability=False, allow_smtputf8=False)
    except (EmailNotValidError, UnicodeError, ValueError):
        raise InvalidDestinationError("email: not a valid email address") from None
    address = valid.ascii_email or valid.normalized
    if not _read_unchanged_by_the_mail_library(address):
        raise InvalidDestinationError(
            "email: not a plain email address (encoded words and other syntax that mail "
            "software rewrites are not accepted)"
        )
    return address


def _read_unchanged_by_the_mail_library(address: str) -> bool:
    """Whether `email.headerregistry.Address` (what the SMTP adapter builds `To` with) takes the
    address as it is.

    email-validator accepts RFC 2047 encoded words (`=?utf-8?q?=76ictim?=@example.com`) as a
    dot-atom, but the `email` package decodes them: the mail would go to `victim@example.com`
    while the per-destination limit counts the literal spelling (every spelling a fresh
    allowance), and one that decodes to CR/LF cannot be put in a header at all. RFC 2047 §5
    forbids encoded words in an addr-spec anyway. Rather than list the forms the parser
    rewrites, ask it: it refuses what it would decode (and non-ASCII local parts, CFWS), and
    an address it accepts must come back byte for byte, so the mailbox that is throttled is
    the one that receives the mail."""
    try:
        parsed = Address(addr_spec=address)
    except (ValueError, HeaderParseError):  # header defects are ValueErrors
        return False
    return parsed.addr_spec == address and address.isascii()


def normalise_destination(method: str, raw: str) -> str:
    return normalise_phone_number(raw) if method == SMS else normalise_email(raw)


# Providers whose mailboxes ignore dots in the local part (`j.doe` is `jdoe`), under every
# domain they answer for: each spelling would otherwise be a fresh allowance of one mailbox.
_DOTLESS_DOMAINS = {"gmail.com": "gmail.com", "googlemail.com": "gmail.com"}


def throttle_key(method: str, destination: str) -> str:
    """The form the per-destination limit counts under: for email, case and `+tag` ignored,
    and at Gmail the dots and the googlemail.com domain (one mailbox, however it is
    spelled). Only counted under: mail goes to the address as given."""
    if method != EMAIL:
        return destination
    local, _, domain = destination.lower().rpartition("@")
    if local.startswith("+"):
        return f"{local}@{domain}"  # no mailbox name before a tag: the whole part is the name
    local = local.split("+", 1)[0]
    if domain in _DOTLESS_DOMAINS:
        local, domain = local.replace(".", ""), _DOTLESS_DOMAINS[domain]
    return f"{local}@{domain}"
