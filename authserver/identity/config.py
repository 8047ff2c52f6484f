"""IdP settings: one `[idps.<name>]` table, validated when the configuration loads."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from authserver.urls import is_https_or_loopback_url

DEFAULT_SCOPES = ("openid", "email", "profile")
DEFAULT_CLAIM_MAP: Mapping[str, str] = MappingProxyType(
    {"email": "email", "name": "name", "groups": "groups", "roles": "roles", "tenant": "tenant"}
)


@dataclass(frozen=True)
class IdPConfig:
    """One upstream OIDC IdP. `claim_map` maps our attribute to the IdP's claim name."""

    name: str
    issuer: str
    client_id: str
    client_secret: str = field(repr=False)
    scopes: tuple[str, ...] = DEFAULT_SCOPES
    claim_map: Mapping[str, str] = field(default_factory=lambda: DEFAULT_CLAIM_MAP, hash=False)
    default_tenant: str = "default"
    #: Audiences accepted for machine tokens (the edge's client id at the IdP). Never our own
    #: `client_id`: an ID token for our login client is a browser sign-in, not the edge's to
    #: exchange. Never used for the browser login, whose ID token must be for us.
    trusted_audiences: tuple[str, ...] = ()
    allow_machine_tokens: bool = True
    #: The tenants this IdP's users may be in (its `tenant` claim must be one of them), so
    #: that with several IdPs one cannot assert another's tenant. Empty: `default_tenant` only.
    tenants: tuple[str, ...] = ()
    #: Accept this IdP's ID-JAGs at the jwt-bearer grant (Cross-App Access). Off by default:
    #: an IdP trusted for sign-in is not thereby trusted to grant agents access.
    id_jag: bool = False
    #: SCIM 2.0 provisioning (authserver/scim.py): the SHA-256 (hex) of this IdP's bearer
    #: token at /scim/v2; empty: no SCIM for this IdP. Only the hash is configured.
    scim_token_sha256: str = field(default="", repr=False)
    #: Which SCIM attribute carries the `sub` this IdP's tokens have: `externalId` (Okta's
    #: default) or `userName`.
    scim_subject: str = "externalId"
    #: Where users' `groups` come from: `token` (every sign-in, edge mint and ID-JAG sets them
    #: from the token's groups claim) or `scim` (only SCIM Groups membership does; tokens leave
    #: them alone). `scim` needs `scim_token_sha256`.
    groups_source: str = "token"
    #: Shared Signals receiver (authserver/ssf.py): the `aud` this IdP's transmitter puts in
    #: the SETs it pushes to us; empty: no SSF for this IdP.
    ssf_audience: str = ""
    #: The transmitter's `iss` (its SSF issuer); default: `issuer`.
    ssf_issuer: str = ""
    #: Where the transmitter's signing keys are; default: the IdP's discovery `jwks_uri`.
    ssf_jwks_uri: str = ""
    #: SHA-256 (hex) of the bearer token the transmitter sends with each push (the stream's
    #: `authorization_header`); empty: none is required (the SET's signature still is).
    ssf_token_sha256: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("IdP name is required")
        _check_issuer_url(self.issuer)
        if not self.client_id or not self.client_secret:
            raise ValueError(f"idps.{self.name}: client_id and client_secret are required")
        if "openid" not in self.scopes:
            raise ValueError(f"idps.{self.name}: scopes must include openid")
        unknown = set(self.claim_map) - set(DEFAULT_CLAIM_MAP)
        if unknown:
            raise ValueError(f"idps.{self.name}: unknown claim_map keys {sorted(unknown)}")
        # Partial maps override the defaults; the stored map is read-only.
        merged = {**DEFAULT_CLAIM_MAP, **self.claim_map}
        object.__setattr__(self, "claim_map", MappingProxyType(merged))
        object.__setattr__(self, "scopes", tuple(self.scopes))
        object.__setattr__(self, "trusted_audiences", tuple(self.trusted_audiences))
        if self.client_id in self.trusted_audiences:
            raise ValueError(f"idps.{self.name}: trusted_audiences must not include client_id "
                             "(our own login client)")
        tenants = tuple(self.tenants) or (self.default_tenant,)
        if not all(isinstance(t, str) and t for t in tenants):
            raise ValueError(f"idps.{self.name}: tenants must be non-empty strings")
        if self.default_tenant not in tenants:
            raise ValueError(f"idps.{self.name}: default_tenant must be one of tenants")
        object.__setattr__(self, "tenants", tenants)
        if not isinstance(self.id_jag, bool):
            raise ValueError(f"idps.{self.name}: id_jag must be true or false")
        digest = self.scim_token_sha256
        if digest and (not isinstance(digest, str) or len(digest) != 64
                       or any(c not in "0123456789abcdef" for c in digest)):
            raise ValueError(f"idps.{self.name}: scim_token_sha256 must be 64 lower-case hex "
                             "digits (the SHA-256 of the token, never the token)")
        if self.scim_subject not in ("externalId", "userName"):
            raise ValueError(f"idps.{self.name}: scim_subject must be externalId or userName")
        if self.groups_source not in ("token", "scim"):
            raise ValueError(f"idps.{self.name}: groups_source must be token or scim")
        if self.groups_source == "scim" and not self.scim_token_sha256:
            raise ValueError(f"idps.{self.name}: groups_source = \"scim\" needs "
                             "scim_token_sha256 (SCIM provisioning for this IdP)")
        self._check_ssf()

    def _check_ssf(self) -> None:
        for key in ("ssf_audience", "ssf_issuer", "ssf_jwks_uri", "ssf_token_sha256"):
            value = getattr(self, key)
            if not isinstance(value, str) or len(value) > 2048:
                raise ValueError(f"idps.{self.name}: {key} must be a string")
        if not self.ssf_audience and (self.ssf_issuer or self.ssf_jwks_uri
                                      or self.ssf_token_sha256):
            raise ValueError(f"idps.{self.name}: ssf_issuer, ssf_jwks_uri and "
                             "ssf_token_sha256 need ssf_audience (the receiver's audience)")
        if self.ssf_issuer:
            _check_issuer_url(self.ssf_issuer)
        if self.ssf_jwks_uri and not is_allowed_scheme(self.ssf_jwks_uri):
            raise ValueError(f"idps.{self.name}: ssf_jwks_uri must be https (plain http "
                             "only on loopback)")
        digest = self.ssf_token_sha256
        if digest and (len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest)):
            raise ValueError(f"idps.{self.name}: ssf_token_sha256 must be 64 lower-case hex "
                             "digits (the SHA-256 of the token, never the token)")

    @property
    def ssf_transmitter(self) -> str:
        """The `iss` of this IdP's SETs."""
        return self.ssf_issuer or self.issuer

    @classmethod
    def from_settings(cls, name: str, mapping: Mapping[str, Any]) -> IdPConfig:
        """Build from one `[idps.<name>]` table; unknown keys are a configuration error."""
        allowed = {"issuer", "client_id", "client_secret", "scopes", "claim_map",
                   "default_tenant", "trusted_audiences", "allow_machine_tokens", "tenants",
                   "id_jag", "scim_token_sha256", "scim_subject", "groups_source", "ssf_audience",
                   "ssf_issuer", "ssf_jwks_uri", "ssf_token_sha256"}
        unknown = set(mapping) - allowed
        if unknown:
            raise ValueError(f"idps.{name}: unknown keys {sorted(unknown)}")
        scopes = mapping.get("scopes", DEFAULT_SCOPES)
        if isinstance(scopes, str):
            scopes = scopes.split()
        audiences = mapping.get("trusted_audiences", ())
        if isinstance(audiences, str):
            audiences = (audiences,)
        tenants = mapping.get("tenants", ())
        if isinstance(tenants, str):
            tenants = (tenants,)
        return cls(
            name=name,
            issuer=str(mapping.get("issuer", "")),
            client_id=str(mapping.get("client_id", "")),
            client_secret=str(mapping.get("client_secret", "")),
            scopes=tuple(scopes),
            claim_map=dict(mapping.get("claim_map") or {}),
            default_tenant=str(mapping.get("default_tenant", "default")),
            trusted_audiences=tuple(audiences),
            allow_machine_tokens=bool(mapping.get("allow_machine_tokens", True)),
            tenants=tuple(tenants),
            id_jag=mapping.get("id_jag", False),
            scim_token_sha256=mapping.get("scim_token_sha256", ""),
            scim_subject=mapping.get("scim_subject", "externalId"),
            groups_source=mapping.get("groups_source", "token"),
            ssf_audience=mapping.get("ssf_audience", ""),
            ssf_issuer=mapping.get("ssf_issuer", ""),
            ssf_jwks_uri=mapping.get("ssf_jwks_uri", ""),
            ssf_token_sha256=mapping.get("ssf_token_sha256", ""),
        )


def _check_issuer_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.query or parts.fragment or not parts.netloc:
        raise ValueError("IdP issuer must be an absolute URL without query or fragment")
    if not is_allowed_scheme(url):
        raise ValueError("IdP issuer must be https (plain http only on loopback)")


def is_allowed_scheme(url: str) -> bool:
    # Plain http only for loopback (tests, the demo): an IdP's keys fetched over http could be
    # swapped by anyone on the path.
    return is_https_or_loopback_url(url)
