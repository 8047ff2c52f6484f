"""What the token-exchange package shares: the RFC 8693 token types, the `Exchange` record the
checks fill in (and the audit reads), and the steps every product uses (requested token type,
verifying one of our own tokens, the TX-08 lifetime cap, the token response)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from authserver.cimd import is_url_client_id
from authserver.clients import GRANT_TOKEN_EXCHANGE, ClientRecord, OAuthClient
from authserver.dpop import DPoPProof
from authserver.errors import InvalidRequestError
from authserver.grants.base import Issued, issued
from authserver.intent import Intent, Mandate
from authserver.models import Client, User
from authserver.services import Services
from authserver.token_endpoint.request import Form, TokenRequest
from authserver.tokens import (
    AccessToken,
    TokenNotLiveError,
    check_token_live,
    verify_access_token,
)

GRANT_TYPE = GRANT_TOKEN_EXCHANGE
TT_ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"
TT_ID_TOKEN = "urn:ietf:params:oauth:token-type:id_token"
TT_JWT = "urn:ietf:params:oauth:token-type:jwt"
IDP_TOKEN_TYPES = (TT_ID_TOKEN, TT_JWT)
#: Nested `act` claims beyond this depth are refused (TX-12 chains stay short and auditable).
MAX_ACT_DEPTH = 4
MAX_TOKEN_LENGTH = 8192


@dataclass
class Exchange:
    """What the checks established, in the order they run; also what the audit records."""

    client: OAuthClient
    form: Form
    proof: DPoPProof | None = None
    user: User | None = None
    subject: dict[str, Any] = field(default_factory=dict)
    agent_id: str | None = None
    act: dict[str, Any] | None = None
    platform: str | None = None
    intent: Intent | None = None
    mandate: Mandate | None = None
    within_mandate: bool | None = None
    policy_ids: list[str] = field(default_factory=list)
    approval_id: str | None = None
    token: AccessToken | None = None
    role: str = "agent"
    #: The other agent an `actor_token` names in a narrowing exchange (TX-13 `may_act`).
    designee: str | None = None


class ExchangeSteps:
    """The steps shared by the edge mint, the agent exchange and the narrowed assertion. One
    instance per request; `services` and `req` are only read."""

    def __init__(self, services: Services, req: TokenRequest) -> None:
        self.services = services
        self.req = req
        self._client_records: dict[str, ClientRecord | None] = {}

    @property
    def now(self) -> int:
        return self.req.now

    @property
    def db(self) -> Session:
        return self.req.db

    def check_requested_token_type(self, ex: Exchange) -> None:
        requested = ex.form.get("requested_token_type")
        if requested not in (None, TT_ACCESS_TOKEN):
            raise InvalidRequestError("Unsupported requested_token_type",
                                      reason="requested_token_type_unsupported")

    def _verify_our_token(self, token: str, *, what: str, caller: OAuthClient | None = None
                          ) -> tuple[dict[str, Any], User | None]:
        """One of our tokens, as `what` (subject_token or actor_token), and its user row (None
        for an agent's own token), loaded once here for the steps after. Refused with reason
        `<what>_<TokenNotLiveError.code>` (`subject_token_expired`, `actor_token_revoked`).

        Whether the token's client still exists is asked of the registry cache
        (`client_exists`); `caller`, the request's authenticated client, answers for itself."""
        s = self.services

        def client_exists(client_id: str) -> bool:
            if caller is not None and client_id == caller.client_id:
                # Authenticated moments ago in this request, through the same cache and its
                # generation check (authserver.client_auth.load_client).
                return True
            return self.client_record(client_id) is not None

        try:
            claims = verify_access_token(s.keyring, s.settings.issuer, token, now=self.now)
            user = check_token_live(self.db, claims, client_exists=client_exists)
        except TokenNotLiveError as e:
            # RFC 8693 §2.2.2: an unacceptable input token is invalid_request.
            raise InvalidRequestError(f"{what} is invalid, expired or revoked",
                                      debug=e.reason, reason=f"{what}_{e.code}") from e
        return claims, user

    def client_record(self, client_id: str) -> ClientRecord | None:
        """A client by id: a registered one from the registry cache (authserver.client_cache:
        no SQL while the shared generation holds), a URL client id (authserver.cimd, never
        cached: its row follows a fetched document) from its row. Looked up once per
        request: its steps all see one answer."""
        if client_id not in self._client_records:
            self._client_records[client_id] = (
                self.db.get(Client, client_id) if is_url_client_id(client_id)
                else self.services.registry.client(self.db, client_id, now=self.now))
        return self._client_records[client_id]

    def exchange_response(self, token: AccessToken) -> Issued:
        return issued(token, extra={"issued_token_type": TT_ACCESS_TOKEN})


def remaining_lifetime(subject: dict[str, Any], now: int, ttl: int) -> int:
    """TX-08: `ttl`, capped at what is left of the subject token; never past its exp."""
    left = int(subject.get("exp", now + ttl)) - now
    if left <= 0:
        raise InvalidRequestError("subject_token is invalid, expired or revoked",
                                  debug="expired", reason="subject_token_no_lifetime_left")
    return min(ttl, left)
