"""Cross-App Access: an ID-JAG (draft-ietf-oauth-identity-assertion-authz-grant) presented with
the RFC 7523 jwt-bearer grant (docs/standards.md IDJAG-01..06).

The test IdP issues the ID-JAG through its own token exchange; the agent presents it at our
token endpoint with private_key_jwt and a DPoP proof, receives a DPoP-bound user assertion and
exchanges that, with an intent, for a capability as any agent does. Every refusal of the
assertion is `400 invalid_grant` (RFC 7523 §3.1) with `Cache-Control: no-store` and one
description ("The assertion is not acceptable": the client is not told which check failed), and
issues nothing; so each such test also asserts the check's reason the server logged
(`assert_rejected_because`). Other refusals assert their own exact description."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.http_helpers import REJECTION_LOGGER, assert_refusal, assert_rejected_because
from tests.refusal_helpers import assert_audited_reason
from tests.stack import (
    EDGE_AT_IDP,
    GRANT_TOKEN_EXCHANGE,
    TT_ACCESS_TOKEN,
    TT_ID_TOKEN,
    Agent,
    Stack,
    compact,
    correlation,
    make_stack,
    mandate,
)

USER = "alice"
GRANT_JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TT_ID_JAG = "urn:ietf:params:oauth:token-type:id-jag"
AGENT_GRANTS = (GRANT_TOKEN_EXCHANGE, GRANT_JWT_BEARER)
#: The one description of every refused assertion (RFC 7523 §3.1 invalid_grant).
NOT_ACCEPTABLE = "The assertion is not acceptable"
SCOPE_EXCEEDS = "The requested scope exceeds the granted scope"


def _stack(tmp: Any, **idp: Any) -> Stack:
    s = make_stack(tmp, idp_settings=idp)
    s.agent = s.register_agent(grant_types=AGENT_GRANTS)
    # The agent's runtime signs users in at the IdP as EDGE_AT_IDP; the IdP knows its client
    # id here (the draft's §5 client id mapping).
    s.idp.allow_id_jag(EDGE_AT_IDP, audience=s.issuer, client_id_there=s.agent.client_id)
    return s


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = _stack(tmp_path_factory.mktemp("idjag"), id_jag=True)
    s.signed_in_and_connected(USER, ("crm",))
    yield s
    s.close()


def idp_exchange(stack: Stack, id_token: str, **form: Any) -> requests.Response:
    """The client's token exchange at the IdP (draft §4.3)."""
    data = {"grant_type": GRANT_TOKEN_EXCHANGE, "requested_token_type": TT_ID_JAG,
            "audience": stack.issuer, "subject_token": id_token,
            "subject_token_type": TT_ID_TOKEN, **form}
    return requests.post(stack.idp.issuer + "/token", auth=(EDGE_AT_IDP, stack.edge_idp_secret),
                         data={k: v for k, v in data.items() if v is not None}, timeout=30)


def id_jag_from_idp(stack: Stack, **form: Any) -> str:
    form.setdefault("authorization_details", compact(mandate()))
    resp = idp_exchange(stack, stack.idp_id_token(USER), **form)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["issued_token_type"] == TT_ID_JAG and body["token_type"] == "N_A"
    return str(body["access_token"])


def minted(stack: Stack, **kw: Any) -> str:
    """An ID-JAG made directly by the IdP (claims and headers under the test's control)."""
    kw.setdefault("aud", stack.issuer)
    kw.setdefault("client_id", stack.agent.client_id)
    kw.setdefault("authorization_details", mandate())
    return stack.idp.mint_id_jag(USER, **kw)


def present(stack: Stack, assertion: str, *, agent: Agent | None = None, key: Any = None,
            proof: bool = True, headers: dict[str, str] | None = None,
            **form: Any) -> requests.Response:
    """POST the jwt-bearer grant with private_key_jwt and (unless proof=False) DPoP."""
    agent = agent or stack.agent
    data: dict[str, Any] = {
        "grant_type": GRANT_JWT_BEARER, "assertion": assertion,
        "client_id": agent.client_id,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": agent.assertion(stack.issuer), **form,
    }
    all_headers = dict(headers or {})
    if proof:
        all_headers["DPoP"] = stack.dpop_proof(key or stack.dpop_key())
    return requests.post(stack.issuer + "/token", headers=all_headers, timeout=30,
                         data={k: v for k, v in data.items() if v is not None})


def claims_of(stack: Stack, token: str) -> dict[str, Any]:
    keys = KeySet.import_key_set(requests.get(stack.issuer + "/jwks.json", timeout=10).json())
    return dict(jwt.decode(token, keys, algorithms=["ES256"]).claims)


@pytest.fixture(autouse=True)
def _log_rejections(caplog: pytest.LogCaptureFixture) -> None:
    """The server's reason for each refusal (`assert_rejected_because`)."""
    caplog.set_level("INFO", logger=REJECTION_LOGGER)


def assert_invalid_grant(stack: Stack, resp: requests.Response,
                         caplog: pytest.LogCaptureFixture, because: str,
                         reason: str) -> dict[str, Any]:
    """A refused assertion: 400 invalid_grant, the one description, `because` the debug the
    server logged (which check of JwtBearerGrant / verify_id_jag refused it) and `reason` its
    reason code, logged and in the `id_jag` audit record."""
    body = assert_refusal(resp, 400, "invalid_grant", NOT_ACCEPTABLE)
    assert_rejected_because(caplog, because)
    assert_audited_reason(stack, caplog, reason, event="id_jag")
    return body


# --- the whole chain ----------------------------------------------------------------------------


def test_idp_id_jag_to_user_assertion_to_capability(stack: Stack) -> None:
    key = stack.dpop_key()
    cid = correlation()
    resp = present(stack, id_jag_from_idp(stack), key=key, headers={"X-Request-ID": cid})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["token_type"] == "DPoP"
    assert resp.headers["Cache-Control"] == "no-store"
    claims = claims_of(stack, body["access_token"])
    assert claims["sub"] == stack.user_id(USER)
    assert claims["aud"] == stack.issuer
    assert claims["client_id"] == stack.agent.client_id
    assert claims["act"] == {"sub": stack.agent.client_id}
    assert claims["cnf"] == {"jkt": key.dpop_jkt}
    assert claims["exp"] - claims["iat"] <= 300
    [detail] = claims["authorization_details"]
    assert detail["type"] == "agent_mandate"
    [record] = stack.audit_for(cid)
    assert (record["event"], record["outcome"]) == ("id_jag", "allowed")
    assert record["user_id"] == stack.user_id(USER)

    # The user assertion is exchanged with an intent like an edge-minted one.
    cap = stack.agent_exchange(body["access_token"], key)
    assert cap.status_code == 200, cap.text
    capability = cap.json()["access_token"]
    deal = stack.gateway(capability, key, "GET", "crm/deals/acme-123")
    assert deal.status_code == 200, deal.text


def test_user_assertion_needs_the_same_key_downstream(stack: Stack) -> None:
    key = stack.dpop_key()
    assertion = present(stack, minted(stack), key=key).json()["access_token"]
    resp = stack.agent_exchange(assertion, stack.dpop_key())
    assert_refusal(resp, 400, "invalid_request",
                   "DPoP proof key does not match the subject token")


def test_without_a_mandate_the_intent_is_denied(
        stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    """No agent_mandate in the grant: the assertion is issued, the policy denies the intent."""
    key = stack.dpop_key()
    resp = present(stack, minted(stack, authorization_details=None), key=key)
    assert resp.status_code == 200, resp.text
    assert "authorization_details" not in claims_of(stack, resp.json()["access_token"])
    denied = stack.agent_exchange(resp.json()["access_token"], key)
    assert_refusal(denied, 403, "access_denied", "The intent is not allowed")
    assert_rejected_because(caplog, "no_mandate")


# --- refusals -----------------------------------------------------------------------------------


def test_replayed_id_jag(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    grant = minted(stack)
    assert present(stack, grant).status_code == 200
    assert_invalid_grant(stack, present(stack, grant), caplog, "ID-JAG already used",
                         "id_jag_replayed")


def test_refused_grant_is_not_spent(stack: Stack) -> None:
    """A request refused before the last check leaves the grant usable (like the edge mint)."""
    grant = minted(stack)
    assert_refusal(present(stack, grant, scope="write"), 400, "invalid_scope", SCOPE_EXCEEDS)
    assert present(stack, grant).status_code == 200


def test_wrong_audience(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    cid = correlation()
    resp = present(stack, minted(stack, aud="https://other-as.example"),
                   headers={"X-Request-ID": cid})
    assert_invalid_grant(stack, resp, caplog, "aud mismatch", "id_jag_rejected")
    [record] = stack.audit_for(cid)
    assert (record["event"], record["outcome"]) == ("id_jag", "invalid")
    assert record["detail"]["debug"] == "aud mismatch"


def test_several_audiences(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    grant = minted(stack, aud=[stack.issuer, "https://other.example"],
                   extra={"azp": stack.issuer})
    assert_invalid_grant(stack, present(stack, grant), caplog, "aud is not exactly this server",
                         "id_jag_rejected")


def test_wrong_client(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    other = stack.register_agent(grant_types=AGENT_GRANTS)
    assert_invalid_grant(stack, present(stack, minted(stack), agent=other), caplog,
                         "client_id is not the authenticated client", "id_jag_other_client")


def test_expired(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    assert_invalid_grant(stack, present(stack, minted(stack, exp_in=-120)), caplog, "expired",
                         "id_jag_rejected")


def test_issued_in_the_future(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    now = stack.clock()
    grant = minted(stack, extra={"iat": now + 600, "exp": now + 900})
    assert_invalid_grant(stack, present(stack, grant), caplog, "iat in the future",
                         "id_jag_rejected")


def test_missing_jti(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    assert_invalid_grant(stack, present(stack, minted(stack, extra={"jti": None})), caplog,
                         "jti missing or invalid", "id_jag_rejected")


def test_missing_client_id(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    assert_invalid_grant(stack, present(stack, minted(stack, extra={"client_id": None})), caplog,
                         "client_id missing or invalid", "id_jag_rejected")


def test_forged_signature(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    grant = minted(stack, sign_with=stack.idp.foreign_key())
    assert_invalid_grant(stack, present(stack, grant), caplog, "bad signature (BadSignatureError)",
                         "id_jag_rejected")


def test_unsigned_alg_none(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    import base64
    import json

    def seg(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    signed = minted(stack)
    payload = json.loads(base64.urlsafe_b64decode(signed.split(".")[1] + "=="))
    unsigned = seg({"alg": "none", "typ": "oauth-id-jag+jwt"}) + "." + seg(payload) + "."
    assert_invalid_grant(stack, present(stack, unsigned), caplog, "alg 'none' not allowed",
                         "id_jag_rejected")


@pytest.mark.parametrize("typ", [None, "JWT", "at+jwt", "id-jag+jwt"])
def test_wrong_typ(stack: Stack, typ: str | None, caplog: pytest.LogCaptureFixture) -> None:
    # typ=None drops the member, but joserfc's jwt.encode (the test IdP signs with it) then
    # writes `typ: JWT`: that case is the JWT one again, not a token without typ.
    assert_invalid_grant(stack, present(stack, minted(stack, header={"typ": typ})), caplog,
                         f"typ {typ or 'JWT'!r} is not oauth-id-jag+jwt", "id_jag_rejected")


def test_id_token_is_not_an_id_jag(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    token = stack.idp.mint_id_token(USER, aud=stack.issuer,
                                    extra={"client_id": stack.agent.client_id, "jti": "x1"})
    assert_invalid_grant(stack, present(stack, token), caplog, "typ 'JWT' is not oauth-id-jag+jwt",
                         "id_jag_rejected")


def test_unknown_issuer(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    grant = minted(stack, extra={"iss": "https://evil.example"})
    assert_invalid_grant(stack, present(stack, grant), caplog, "untrusted issuer 'https://evil.example'",
                         "id_jag_rejected")


def test_scope_beyond_the_grant(stack: Stack) -> None:
    assert_refusal(present(stack, minted(stack, scope="read"), scope="read write"), 400,
                   "invalid_scope", SCOPE_EXCEEDS)


def test_scope_within_the_grant(stack: Stack) -> None:
    resp = present(stack, minted(stack, scope="read write"), scope="read")
    assert resp.status_code == 200, resp.text
    assert resp.json()["scope"] == "read"
    assert claims_of(stack, resp.json()["access_token"])["scope"] == "read"


def test_resource_beyond_the_grant(stack: Stack) -> None:
    assert_refusal(present(stack, minted(stack), resource=stack.issuer + "/gateway/crm"), 400,
                   "invalid_target", "The requested resource exceeds the grant")


def test_gateway_resource_in_the_grant_is_refused(stack: Stack) -> None:
    """Gateway tokens come only from the intent exchange, whatever the IdP granted."""
    gateway = stack.issuer + "/gateway/crm"
    assert_refusal(present(stack, minted(stack, resource=gateway), resource=gateway), 400,
                   "invalid_target", "Gateway tokens are issued only for an intent")


def test_dpop_required_for_a_user_assertion(stack: Stack) -> None:
    assert_refusal(present(stack, minted(stack), proof=False), 400, "invalid_dpop_proof",
                   "DPoP proof required", headers={"DPoP-Nonce": None})


def test_missing_assertion(stack: Stack) -> None:
    assert_refusal(present(stack, ""), 400, "invalid_request", "assertion is required")


def test_client_not_allowed_the_grant(stack: Stack) -> None:
    other = stack.register_agent(grant_types=(GRANT_TOKEN_EXCHANGE,))
    assert_refusal(present(stack, minted(stack, client_id=other.client_id), agent=other), 400,
                   "unauthorized_client", "The client may not use this grant type")


def test_client_authentication_failure(stack: Stack) -> None:
    resp = requests.post(stack.issuer + "/token", auth=(stack.agent.client_id, "wrong"),
                         data={"grant_type": GRANT_JWT_BEARER, "assertion": minted(stack)},
                         timeout=30)
    assert_refusal(resp, 401, "invalid_client", "Client authentication failed",
                   headers={"WWW-Authenticate": 'Basic realm="authserver"'})


def test_deprovisioned_user(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    user = stack.idp.users["carol"]
    grant = stack.idp.mint_id_jag("carol", aud=stack.issuer, client_id=stack.agent.client_id)
    assert present(stack, grant).status_code == 200
    from sqlalchemy import select

    from authserver.models import User

    with stack.services.db.session() as session:
        carol = session.scalars(select(User).where(User.idp_subject == user["sub"])).one()
        carol_id = carol.id
    assert stack.deprovision(carol_id).status_code == 200
    again = stack.idp.mint_id_jag("carol", aud=stack.issuer, client_id=stack.agent.client_id)
    assert_invalid_grant(stack, present(stack, again), caplog, f"user {carol_id} is deprovisioned",
                         "id_jag_user_refused")


def test_tenant_not_bound_to_the_idp(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    assert_invalid_grant(stack, present(stack, minted(stack, extra={"tenant": "globex"})), caplog,
                         "tenant 'globex' is not bound to idp corp", "id_jag_user_refused")


def test_idp_refuses_an_unknown_audience(stack: Stack) -> None:
    resp = idp_exchange(stack, stack.idp_id_token(USER), audience="https://other-as.example")
    assert resp.status_code == 400


def test_issued_token_type_is_not_confused(stack: Stack) -> None:
    """The user assertion from an ID-JAG is our access token, never an ID-JAG again."""
    resp = present(stack, minted(stack))
    assert resp.json().get("issued_token_type") in (None, TT_ACCESS_TOKEN)


def test_idp_not_id_jag_enabled(tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    s = _stack(tmp_path)  # [idps.corp] without id_jag
    try:
        grant = s.idp.mint_id_jag(USER, aud=s.issuer, client_id=s.agent.client_id,
                                  authorization_details=mandate())
        assert_invalid_grant(s, present(s, grant), caplog, "idp corp is not enabled for ID-JAG",
                             "id_jag_rejected")
    finally:
        s.close()
