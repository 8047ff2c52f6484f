"""ID-token checks (OIDC Core §3.1.3.7), IdP tokens as RFC 8693 `subject_token`s
(unacceptable → `invalid_request`, RFC 8693 §2.2.2) and ID-JAGs
(draft-ietf-oauth-identity-assertion-authz-grant §3, §4.4.1), each check a named function that
raises IdentityError with its reason; single use of both through the shared `Store`."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from typing import Any, TypeGuard

from joserfc import jws, jwt
from joserfc.errors import JoseError

from authserver.config import JWT_LEEWAY
from authserver.encoding import b64url_encode
from authserver.identity.config import IdPConfig
from authserver.identity.discovery import IdPDiscovery
from authserver.identity.errors import IdentityError
from authserver.store import Store
from authserver.store import keys as store_keys

#: Clock skew tolerated on `exp`, `iat` and `nbf`.
ID_TOKEN_LEEWAY = JWT_LEEWAY

#: Largest token we parse; anything longer is rejected before any decoding.
MAX_TOKEN_LENGTH = 16 * 1024
#: Asymmetric algorithms only: never `none`, never a MAC (the client secret is not a key here).
ALLOWED_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
                      "ES512")

#: Store key prefix of IdP tokens already exchanged at the edge mint (single use;
#: authserver.store.keys.idp_subject_token spells the keys).
SUBJECT_TOKEN_KEY = "idp-subject-token:"
#: Store key prefix of ID-JAGs already redeemed (single use, by `iss` + `jti`;
#: authserver.store.keys.idp_id_jag spells the keys).
ID_JAG_KEY = "idp-id-jag:"
#: The longest ID-JAG lifetime (`exp - iat`) accepted. The draft's examples last minutes; a
#: longer grant would also keep its replay entry that long.
MAX_ID_JAG_LIFETIME = 3600
#: Longest `jti` or `client_id` claim accepted in an ID-JAG.
MAX_ID_JAG_CLAIM = 255

ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
#: JOSE `typ` values accepted per use (lower-cased, `application/` prefix removed; absent is
#: accepted too). Explicit typing (RFC 8725 §3.11) keeps logout tokens, SETs, DPoP proofs and
#: ID-JAGs from being accepted as identity tokens.
ID_TOKEN_TYPS = frozenset({"jwt"})
_MACHINE_JWT_TYPS = frozenset({"jwt", "at+jwt"})
_SUBJECT_TOKEN_TYPS = {ID_TOKEN_TYPE: ID_TOKEN_TYPS, JWT_TOKEN_TYPE: _MACHINE_JWT_TYPS}
#: draft-ietf-oauth-identity-assertion-authz-grant §3: the ID-JAG's `typ` MUST be this (and,
#: unlike the types above, it must be present).
ID_JAG_TYP = "oauth-id-jag+jwt"
_ID_JAG_TYPS = frozenset({ID_JAG_TYP})


class IdTokenVerifier(IdPDiscovery):
    """One IdP's tokens: signature with its cached keys, then the named claim checks."""

    def verify_id_token(
        self, token: str, *, now: int, nonce: str | None, audiences: Sequence[str]
    ) -> dict[str, Any]:
        """Validate an ID token (OIDC Core §3.1.3.7); return its claims. Raises IdentityError.

        Checks, in order: compact JWS shape, `alg` allow-list, JOSE `typ`, signature with the
        IdP's key for `kid`, `iss` exact, `sub`, `aud` contains one of `audiences`, `azp`,
        `exp`/`iat`/`nbf` with `ID_TOKEN_LEEWAY`, and `nonce` when given.
        """
        return self.verify_token(token, now=now, nonce=nonce, audiences=audiences,
                            typs=ID_TOKEN_TYPS)[1]

    def verify_token(
        self,
        token: str,
        *,
        now: int,
        nonce: str | None,
        audiences: Sequence[str],
        typs: frozenset[str],
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        header = protected_header(token)
        alg = header.get("alg")
        if alg not in ALLOWED_ALGORITHMS:
            raise IdentityError(f"alg {str(alg)[:16]!r} not allowed")
        if "crit" in header:
            raise IdentityError("crit header not understood")
        typ = header.get("typ")
        if typ is not None and _normalise_typ(typ) not in typs:
            raise IdentityError(f"typ {str(typ)[:32]!r} not accepted here")
        key = self._key_for(header.get("kid"), alg, now=now)
        try:
            decoded = jwt.decode(token, key, algorithms=[alg])
        except (JoseError, ValueError) as e:
            raise IdentityError(f"bad signature ({type(e).__name__})") from e
        claims = dict(decoded.claims)
        _check_issuer(claims, self.config.issuer)
        _check_subject(claims)
        _check_audience(claims, audiences)
        _check_times(claims, now)
        if nonce is not None:
            _check_nonce(claims, nonce)
        return dict(decoded.header), claims


class TrustedIssuerTokens:
    """IdP tokens presented to us by a machine (a `subject_token`, an ID-JAG): the unverified
    `iss` picks the configured IdP (`by_issuer`) whose keys and rules then apply."""

    _store: Store

    def by_issuer(self, iss: str) -> IdTokenVerifier | None:
        raise NotImplementedError

    def verify_subject_token(
        self, token: str, *, now: int, token_type: str = ID_TOKEN_TYPE
    ) -> tuple[IdPConfig, dict[str, Any]]:
        """Validate an IdP token presented as an RFC 8693 `subject_token`.

        The unverified `iss` only selects which IdP's keys to verify with; everything is then
        checked against that IdP. Raises IdentityError (→ `invalid_request`) for an unknown
        issuer, an IdP closed to machine tokens, or any failed check.
        """
        typs = _SUBJECT_TOKEN_TYPS.get(token_type)
        if typs is None:
            raise IdentityError(f"unsupported subject_token_type {token_type[:80]!r}")
        iss = unverified_claims(token).get("iss")
        provider = self.by_issuer(iss) if isinstance(iss, str) else None
        if provider is None:
            raise IdentityError(f"untrusted issuer {str(iss)[:128]!r}")
        config = provider.config
        if not config.allow_machine_tokens:
            raise IdentityError(f"idp {config.name} does not accept machine tokens")
        _, claims = provider.verify_token(
            token, now=now, nonce=None,
            audiences=(config.client_id, *config.trusted_audiences), typs=typs,
        )
        aud = claims["aud"]
        if config.client_id in ([aud] if isinstance(aud, str) else aud):
            # A token that is (also) for our login client is someone's browser sign-in.
            raise IdentityError("aud is our own login client")
        return config, claims

    def spend_subject_token(self, token: str, claims: Mapping[str, Any], *, now: int) -> None:
        """Accept a verified subject token once (by `iss` + `jti`, or the hash of what it
        signs when it has no `jti`), remembered in the shared store until it expires. Raises
        IdentityError if it was already used; store failures propagate (503).

        Not the hash of the whole token: an ECDSA signature is malleable ((r, s) and
        (r, n - s) both verify), so the same signed content can come with another signature."""
        provider = self.by_issuer(str(claims.get("iss")))
        if provider is None:
            raise IdentityError("claims are not from a configured IdP")
        jti = claims.get("jti")
        key = store_keys.idp_subject_token(claims["iss"], jti if isinstance(jti, str) else None,
                                           token.rsplit(".", 1)[0])
        ttl = max(int(claims["exp"]) + ID_TOKEN_LEEWAY - now, 1)
        if not self._store.add_if_absent(key, ttl):
            raise IdentityError("subject_token already used")

    def verify_id_jag(self, token: str, *, now: int, audience: str
                      ) -> tuple[IdPConfig, dict[str, Any]]:
        """Validate an ID-JAG (draft-ietf-oauth-identity-assertion-authz-grant §3, §4.4.1,
        and RFC 7523 §3); return its IdP and claims. Raises IdentityError for any failure.

        Checks, in order: `typ` exactly `oauth-id-jag+jwt` (present), a configured issuer whose
        `id_jag` is on, then the ID-token checks (compact JWS, `alg` allow-list, signature with
        that IdP's cached JWKS, `iss`, `sub`, `exp`/`iat`/`nbf`), `aud` exactly `audience`
        (one value), `client_id` and `jti` present, and a lifetime of at most
        MAX_ID_JAG_LIFETIME. Single use is `spend_id_jag`, the caller's last check.
        """
        typ = protected_header(token).get("typ")
        if not isinstance(typ, str) or _normalise_typ(typ) != ID_JAG_TYP:
            raise IdentityError(f"typ {str(typ)[:32]!r} is not {ID_JAG_TYP}")
        iss = unverified_claims(token).get("iss")
        provider = self.by_issuer(iss) if isinstance(iss, str) else None
        if provider is None:
            raise IdentityError(f"untrusted issuer {str(iss)[:128]!r}")
        if not provider.config.id_jag:
            raise IdentityError(f"idp {provider.config.name} is not enabled for ID-JAG")
        _, claims = provider.verify_token(token, now=now, nonce=None, audiences=(audience,),
                                     typs=_ID_JAG_TYPS)
        aud = claims["aud"]
        if aud != audience and aud != [audience]:
            # §4.4.1: the aud claim identifies this server; a grant for several is refused.
            raise IdentityError("aud is not exactly this server")
        for name in ("client_id", "jti"):
            value = claims.get(name)
            if not isinstance(value, str) or not value or len(value) > MAX_ID_JAG_CLAIM:
                raise IdentityError(f"{name} missing or invalid")
        if claims["exp"] - claims["iat"] > MAX_ID_JAG_LIFETIME:
            raise IdentityError("lifetime too long")
        return provider.config, claims

    def spend_id_jag(self, claims: Mapping[str, Any], *, now: int) -> None:
        """Accept a verified ID-JAG once (by `iss` + `jti`, RFC 7523 §3 item 7), remembered in
        the shared store until it expires. Raises IdentityError if it was already used; store
        failures propagate (503)."""
        provider = self.by_issuer(str(claims.get("iss")))
        if provider is None:
            raise IdentityError("claims are not from a configured IdP")
        ttl = max(int(claims["exp"]) + ID_TOKEN_LEEWAY - now, 1)
        if not self._store.add_if_absent(store_keys.idp_id_jag(claims["iss"], claims["jti"]),
                                         ttl):
            raise IdentityError("ID-JAG already used")


def _check_issuer(claims: Mapping[str, Any], issuer: str) -> None:
    # OIDC Core §3.1.3.7 (2): iss MUST exactly match the IdP's issuer.
    if claims.get("iss") != issuer:
        raise IdentityError("iss mismatch")


def _check_subject(claims: Mapping[str, Any]) -> None:
    sub = claims.get("sub")
    # OIDC Core §2: sub is REQUIRED, at most 255 ASCII characters.
    if not isinstance(sub, str) or not sub or len(sub) > 255:
        raise IdentityError("sub missing or invalid")


def _check_audience(claims: Mapping[str, Any], audiences: Sequence[str]) -> None:
    aud = claims.get("aud")
    aud_list = [aud] if isinstance(aud, str) else aud
    if not isinstance(aud_list, list) or not aud_list or not all(
        isinstance(a, str) for a in aud_list
    ):
        raise IdentityError("aud missing or malformed")
    # OIDC Core §3.1.3.7 (3): aud MUST contain our client_id (or an accepted audience).
    if not any(a in audiences for a in aud_list):
        raise IdentityError("aud mismatch")
    azp = claims.get("azp")
    # §3.1.3.7 (4)-(5): with several audiences azp must be present; if present, it must name
    # a party we accept, so a token minted for another client is not replayed to us.
    if len(aud_list) > 1 and azp is None:
        raise IdentityError("azp missing with multiple audiences")
    if azp is not None and azp not in audiences:
        raise IdentityError("azp mismatch")


def _check_times(claims: Mapping[str, Any], now: int) -> None:
    exp = claims.get("exp")
    iat = claims.get("iat")
    if not _is_number(exp) or not _is_number(iat):
        raise IdentityError("exp or iat missing")
    # §3.1.3.7 (9): the current time MUST be before exp.
    if now >= exp + ID_TOKEN_LEEWAY:
        raise IdentityError("expired")
    if iat > now + ID_TOKEN_LEEWAY:
        raise IdentityError("iat in the future")
    nbf = claims.get("nbf")
    if nbf is not None and (not _is_number(nbf) or nbf > now + ID_TOKEN_LEEWAY):
        raise IdentityError("not yet valid (nbf)")


def _check_nonce(claims: Mapping[str, Any], expected: str) -> None:
    # §3.1.3.7 (11): the nonce MUST equal the one sent in the authentication request.
    nonce = claims.get("nonce")
    if not isinstance(nonce, str) or not hmac.compare_digest(nonce.encode(), expected.encode()):
        raise IdentityError("nonce mismatch")


def check_at_hash(at_hash: Any, access_token: str, alg: str) -> None:
    digest = {"256": hashlib.sha256, "384": hashlib.sha384, "512": hashlib.sha512}[alg[-3:]]
    half = digest(access_token.encode("ascii")).digest()
    expected = b64url_encode(half[: len(half) // 2])
    if not isinstance(at_hash, str) or not hmac.compare_digest(at_hash.encode(),
                                                               expected.encode()):
        raise IdentityError("at_hash mismatch")

def _check_compact(token: Any) -> bytes:
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
        raise IdentityError("token missing or too long")
    # Exactly three segments: a signed JWT. Five would be a JWE, which joserfc would also
    # decode; we accept signed tokens only.
    if token.count(".") != 2:
        raise IdentityError("not a compact JWS")
    return token.encode("ascii", errors="replace")


def protected_header(token: str) -> dict[str, Any]:
    raw = _check_compact(token)
    try:
        compact = jws.extract_compact(raw)
    except (JoseError, ValueError, TypeError) as e:
        raise IdentityError(f"malformed token ({type(e).__name__})") from e
    return dict(compact.protected)


def parse_unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(protected header, payload) of a compact JWS, WITHOUT verifying it: only to choose
    what to verify it with. Raises IdentityError for anything that is not a signed JWT of at
    most MAX_TOKEN_LENGTH with a JSON object payload."""
    return protected_header(token), unverified_claims(token)


def normalise_typ(typ: Any) -> str:
    """A JOSE `typ` compared as RFC 7515 §4.1.9 says: case-insensitive, `application/`
    optional."""
    return _normalise_typ(typ)


def unverified_claims(token: str) -> dict[str, Any]:
    """The payload WITHOUT signature verification: used only to choose the IdP."""
    raw = _check_compact(token)
    try:
        payload = jws.extract_compact(raw).payload
        claims = json.loads(payload)
    except (JoseError, ValueError, TypeError) as e:
        raise IdentityError(f"malformed token ({type(e).__name__})") from e
    if not isinstance(claims, dict):
        raise IdentityError("token payload is not a JSON object")
    return claims

def _normalise_typ(typ: Any) -> str:
    value = str(typ).lower()
    return value.removeprefix("application/")


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)
