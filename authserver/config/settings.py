"""The settings: every one declared once, with its type, default, bounds and documentation
(`Settings`); values are checked as they are set (`config.spec`). Loading them from the TOML
file and the environment is `config.load`; the masked view and the reference, `config.reference`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from authserver.config.spec import TTL, check_value, setting
from authserver.config.windows import (
    ACCESS_TOKEN_TTL,
    CAPABILITY_TOKEN_TTL,
    DAY,
    DPOP_PROOF_WINDOW,
    REFRESH_TOKEN_REUSE_INTERVAL,
    REFRESH_TOKEN_TTL,
    USER_ASSERTION_TTL,
)

#: The `authserver` package directory.
PACKAGE_DIR = Path(__file__).resolve().parent.parent
#: Shipped inside the package (`authserver/policies` is the repository's `policies/`).
DEFAULT_POLICY_DIR = PACKAGE_DIR / "policies"


@dataclass(frozen=True)
class Settings:
    issuer: str = setting(
        "http://127.0.0.1:8000",
        "the public base URL. It is used for DPoP `htu` and token `aud` comparisons, so behind a "
        "proxy use the external URL. It must be https (plain http only on loopback).",
        https_url=True)
    data_dir: str = setting("var", "SQLite file, KEK file and generated secret live here")
    database_url: str = setting(
        "", "e.g. `postgresql://user@db:5432/authserver` (psycopg 3); behind PgBouncer in "
        "transaction mode add `?prepare_threshold=none`",
        default_doc="SQLite in `DATA_DIR`", secret=True)
    redis_url: str = setting(
        "", "e.g. `redis://redis:6379/0` (required with more than one process); a cluster: "
        "`redis+cluster://node:6379`; Sentinel: `redis+sentinel://sentinel:26379/service_name`",
        default_doc="*(unset: embedded store, one process only)*", secret=True)
    #: Namespace for every key in Redis (deployments, or test runs, sharing one Redis).
    redis_key_prefix: str = setting("authserver:", "namespace for keys in a shared Redis")
    kek_file: str = setting(
        "", "the local key-encryption key (32 random bytes, base64, created 0600 on first start)",
        default_doc="`DATA_DIR/kek.key`")
    #: Older KEK files, still accepted for decryption during a KEK rotation.
    previous_kek_files: tuple[str, ...] = setting(
        (), "older KEK files still accepted for decryption during a KEK rotation "
        "(comma-separated)", default_doc="*(none)*")
    secret_key: str = setting(
        "", "sessions and DPoP nonces (≥ 32 characters). Every instance of a deployment must "
        "share it.", default_doc="generated into `DATA_DIR/secret.key`", secret=True,
        min_length=32)
    policy_dir: str = setting(
        str(DEFAULT_POLICY_DIR),
        "Cedar schema and policies. The app refuses to start if they do not validate.",
        default_doc="`policies/` (shipped in the package)")
    registration_token: str = setting(
        "", "initial access token required at `/register`",
        default_doc="*(open registration)*", secret=True)
    admin_token: str = setting(
        "", "Bearer token for `/admin/*`", default_doc="*(admin API off)*", secret=True)
    dpop_nonce: str = setting(
        "off", "`off`, `all` (every client), or `per_client` (clients created with "
        "`--dpop-nonce`)", choices=("off", "all", "per_client"))
    dpop_required_grants: tuple[str, ...] = setting(
        ("urn:ietf:params:oauth:grant-type:token-exchange",),
        "grants that must present a DPoP proof (comma-separated)", default_doc="token exchange")
    resources: tuple[str, ...] = setting(
        (), "extra RFC 8707 resources tokens may be audience-restricted to (comma-separated)",
        default_doc="*(none)*")
    trusted_proxies: tuple[str, ...] = setting(
        (), "reverse proxies (IP addresses or CIDR networks, comma-separated) whose "
        "`X-Forwarded-For` gives the client address for per-address rate limits, logs and "
        "audit; gunicorn.conf.py uses it for `FORWARDED_ALLOW_IPS` too when that is unset "
        "(see deploy/)", default_doc="*(none: the peer address is the client)*",
        ip_networks=True)
    cimd_trusted_hosts: tuple[str, ...] = setting(
        (), "hosts whose client metadata documents (URL client ids) the consent page shows "
        "without the *unverified* mark (comma-separated hostnames, exact match)",
        default_doc="*(none: every such client is marked unverified)*", hostnames=True)
    scopes: tuple[str, ...] = setting(
        ("openid", "profile", "email", "offline_access", "read", "write"), "supported scopes")
    access_token_ttl: int = setting(ACCESS_TOKEN_TTL, "access tokens",
                                    **TTL, maximum=DAY)
    refresh_token_ttl: int = setting(REFRESH_TOKEN_TTL, "refresh tokens",
                                     minimum=60, maximum=366 * DAY)
    refresh_token_reuse_interval: int = setting(
        REFRESH_TOKEN_REUSE_INTERVAL,
        "for this long after a rotation, the same client (its credentials and DPoP key) "
        "presenting the rotated refresh token again gets the same successor back: a lost "
        "response is retried, not taken for theft (see *Refresh tokens* below); 0 turns it off",
        minimum=0, maximum=300)
    user_assertion_ttl: int = setting(
        USER_ASSERTION_TTL, "the edge-minted user assertion",
        **TTL, maximum=3600)
    capability_token_ttl: int = setting(
        CAPABILITY_TOKEN_TTL, "the gateway token", **TTL, maximum=600)
    dpop_proof_window: int = setting(
        DPOP_PROOF_WINDOW, "how old a proof's `iat` may be", **TTL, maximum=600)
    local_login: bool = setting(
        True, "allow local accounts; set to `false` in production so people sign in at the "
        "IdP only")
    log_level: str = setting(
        "INFO", "JSON logs on stderr, one line per request with its correlation id",
        choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"))
    auto_migrate: bool = setting(
        True, "run migrations at start-up (set to `false` and run `authserver db upgrade` once "
        "per deploy when many replicas start together)")
    testing: bool = setting(False, "Flask's test mode, for the test suite only", internal=True)
    idps: Mapping[str, Any] = setting(
        {}, "corporate OpenID Connect IdPs: TOML tables `[idps.NAME]` (below)",
        default_doc="*(none)*", secret=True)
    platforms: Mapping[str, Any] = setting(
        {}, "downstream platforms the broker connects users to: TOML tables "
        "`[platforms.NAME]` (below)", default_doc="*(none)*", secret=True)
    rate_limits: Mapping[str, Any] = setting(
        {}, "per user × `read`/`write`/`destructive`, and per `agent`: TOML table "  # noqa: RUF001
        "`[rate_limits]` of `{ limit, window }` (window: 1 to 86400 seconds)",
        default_doc="120, 30, 5 and 300 per 60 s")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, check_value(f, getattr(self, f.name), f.name))
        object.__setattr__(self, "issuer", self.issuer.rstrip("/"))
        data_dir = Path(self.data_dir)
        if not self.database_url:
            object.__setattr__(
                self, "database_url", f"sqlite:///{(data_dir / 'authserver.db').resolve()}"
            )
        if not self.kek_file:
            object.__setattr__(self, "kek_file", str(data_dir / "kek.key"))

    @property
    def token_endpoint(self) -> str:
        return self.issuer + "/token"

    @classmethod
    def load(
        cls, overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
    ) -> Settings:
        """Settings from the TOML file, then the environment, then `overrides`; every value is
        checked where it comes from (`ConfigError` names it). See `config.load`."""
        from authserver.config.load import load_settings

        return load_settings(cls, overrides, environ)

    def effective(self) -> dict[str, Any]:
        """Every setting's value, secrets masked: what `authserver config check` prints."""
        from authserver.config.reference import effective

        return effective(self)
