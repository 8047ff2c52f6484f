"""The token endpoint's body rules: where parameters go (RFC 6749 §3.2), which may repeat
(RFC 8707 §2, RFC 8693 §2.1), characters no valid request carries, and each grant's
allow-list (parameters a grant does not declare are dropped before it runs)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Protocol

from authserver import errors
from authserver.client_auth import check_basic_credentials, has_control_characters
from authserver.token_endpoint.request import Form, TokenRequest

#: RFC 8707 §2 / RFC 8693 §2.1: the only token-endpoint parameters that may repeat.
REPEATABLE_PARAMETERS = ("resource", "audience")

#: Read before any grant runs (RFC 6749 §2.3, §4; RFC 7523 §2.2): kept for every grant.
ENDPOINT_PARAMETERS = frozenset({"grant_type", "client_id", "client_secret",
                                 "client_assertion_type", "client_assertion"})


class MultiValued(Protocol):
    """A multi-dict: our `Form`, or the HTTP framework's (the app's every-route check)."""

    def lists(self) -> Iterable[tuple[str, list[str]]]: ...


def check_body_parameters(req: TokenRequest) -> None:
    """Parameters in the body, none repeated, no character a valid request never carries,
    well-formed Basic credentials. Raises `InvalidRequestError` or `InvalidClientError`."""
    check_parameters(req.query, req.form)
    check_parameter_characters(req.query, req.form)
    check_basic_credentials(req.authorization)


def check_parameters(query: Form, form: Form) -> None:
    """RFC 6749 §3.2: parameters go in the POST body, and none is sent more than once.

    A query parameter could silently override or shadow what the body says; refuse both.
    Raises `InvalidRequestError`.
    """
    if query:
        raise errors.InvalidRequestError("Parameters must be sent in the request body",
                                         reason="parameters_in_query")
    for name in form:
        if name not in REPEATABLE_PARAMETERS and len(form.getlist(name)) > 1:
            raise errors.InvalidRequestError("A parameter was sent more than once",
                                             reason="parameter_repeated")


def check_parameter_characters(*sources: MultiValued) -> None:
    """Refuse, at the boundary, parameters no valid request carries (any route).

    A NUL in any parameter name or value (PostgreSQL refuses it in text, so it could only ever
    fail deeper down), and any control character in `client_id` (RFC 6749 §2.2: VSCHAR).
    `sources` are multi-dicts (query string, form). Raises `InvalidRequestError`.
    """
    for source in sources:
        for name, values in source.lists():
            if "\x00" in name or any("\x00" in value for value in values):
                raise errors.InvalidRequestError("A parameter contains a NUL character",
                                                 reason="parameter_nul_character")
            if name == "client_id" and any(has_control_characters(v) for v in values):
                raise errors.InvalidRequestError("client_id contains a control character",
                                                 reason="client_id_control_character")


def restrict_parameters(req: TokenRequest, declared: Iterable[str]) -> TokenRequest:
    """The request with only the endpoint's and the grant's `declared` parameters: a grant
    never reads what it did not declare."""
    return replace(req, form=req.form.only(ENDPOINT_PARAMETERS | frozenset(declared)))
