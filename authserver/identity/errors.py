"""The two ways identity fails: a token or login response we do not accept (400
`invalid_request`), or an IdP we cannot reach (503)."""

from __future__ import annotations

from authserver.errors import InvalidRequestError, TemporarilyUnavailableError


class IdentityError(InvalidRequestError):
    """An identity token or login response we do not accept.

    RFC 8693 §2.2.2: an unacceptable subject token is `invalid_request`. The description stays
    generic (which check failed is useful to an attacker); the reason goes to `debug`.
    """

    GENERIC_DESCRIPTION = "The identity token is not acceptable"

    def __init__(self, debug: str, *, description: str | None = None) -> None:
        super().__init__(description or self.GENERIC_DESCRIPTION, debug=debug)


class IdPUnavailableError(TemporarilyUnavailableError):
    """The IdP could not be reached or answered nonsense: fail closed (503)."""

    def __init__(self, debug: str) -> None:
        super().__init__("The identity provider is unavailable", debug=debug)
