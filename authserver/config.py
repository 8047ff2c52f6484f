"""Settings and the named windows every rule uses.

Settings come from `AUTHSERVER_*` environment variables and, optionally, a TOML file named by
`AUTHSERVER_CONFIG` (its top-level keys are the variable names without the prefix, lower-case;
tables `idps`, `platforms` and `rate_limits` hold structured settings). Environment
beats file; explicit overrides (tests) beat both. Every key is documented in README.md.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from authserver.urls import is_https_or_loopback_url

# --- windows and lifetimes (seconds); named so a reviewer finds every number in one place ------
ACCESS_TOKEN_TTL = 600
REFRESH_TOKEN_TTL = 30 * 24 * 3600
REFRESH_TOKEN_IDLE_TTL = 7 * 24 * 3600
AUTHORIZATION_CODE_TTL = 60
USER_ASSERTION_TTL = 300
CAPABILITY_TOKEN_TTL = 60
CLIENT_ASSERTION_MAX_AGE = 300
DPOP_PROOF_WINDOW = 60
DPOP_FUTURE_SKEW = 5
DPOP_NONCE_TTL = 300
JWT_LEEWAY = 30
APPROVAL_TTL = 600
APPROVAL_POLL_INTERVAL = 2
SESSION_TTL = 8 * 3600

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_POLICY_DIR = PACKAGE_DIR.parent / "policies"


@dataclass(frozen=True)
class Settings:
    issuer: str = "http://127.0.0.1:8000"
    data_dir: str = "var"
    database_url: str = ""
    redis_url: str = ""
    #: Namespace for every key in Redis (deployments, or test runs, sharing one Redis).
    redis_key_prefix: str = "authserver:"
    kek_file: str = ""
    #: Older KEK files, still accepted for decryption during a KEK rotation.
    previous_kek_files: tuple[str, ...] = ()
    secret_key: str = ""
    policy_dir: str = str(DEFAULT_POLICY_DIR)
    registration_token: str = ""
    admin_token: str = ""
    dpop_nonce: str = "off"  # off | all | per_client
    dpop_required_grants: tuple[str, ...] = ("urn:ietf:params:oauth:grant-type:token-exchange",)
    resources: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ("openid", "profile", "email", "offline_access", "read", "write")
    access_token_ttl: int = ACCESS_TOKEN_TTL
    refresh_token_ttl: int = REFRESH_TOKEN_TTL
    user_assertion_ttl: int = USER_ASSERTION_TTL
    capability_token_ttl: int = CAPABILITY_TOKEN_TTL
    dpop_proof_window: int = DPOP_PROOF_WINDOW
    local_login: bool = True
    log_level: str = "INFO"
    auto_migrate: bool = True
    testing: bool = False
    idps: Mapping[str, Any] = field(default_factory=dict)
    platforms: Mapping[str, Any] = field(default_factory=dict)
    rate_limits: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        issuer = self.issuer.rstrip("/")
        object.__setattr__(self, "issuer", issuer)
        data_dir = Path(self.data_dir)
        if not self.database_url:
            object.__setattr__(
                self, "database_url", f"sqlite:///{(data_dir / 'authserver.db').resolve()}"
            )
        if not self.kek_file:
            object.__setattr__(self, "kek_file", str(data_dir / "kek.key"))
        if self.secret_key and len(self.secret_key) < 32:
            raise ValueError("secret_key must be at least 32 characters")
        if self.dpop_nonce not in ("off", "all", "per_client"):
            raise ValueError("dpop_nonce must be off, all or per_client")
        if not is_https_or_loopback_url(issuer):
            raise ValueError("issuer must be https (plain http only on loopback, for development)")

    @property
    def token_endpoint(self) -> str:
        return self.issuer + "/token"

    @classmethod
    def load(
        cls, overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
    ) -> Settings:
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        config_file = (overrides or {}).get("config_file") or environ.get("AUTHSERVER_CONFIG")
        if config_file:
            with open(config_file, "rb") as fh:
                values.update(tomllib.load(fh))
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for name, f in fields.items():
            raw = environ.get("AUTHSERVER_" + name.upper())
            if raw is not None:
                values[name] = _parse(raw, f.default if f.default is not dataclasses.MISSING
                                      else None)
        values.update({k: v for k, v in (overrides or {}).items() if k != "config_file"})
        unknown = set(values) - set(fields)
        if unknown:
            raise ValueError(f"unknown settings: {', '.join(sorted(unknown))}")
        for name in ("dpop_required_grants", "resources", "scopes", "previous_kek_files"):
            if name in values and isinstance(values[name], list):
                values[name] = tuple(values[name])
        return cls(**values)


def _parse(raw: str, default: Any) -> Any:
    if isinstance(default, bool):
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, tuple):
        return tuple(x.strip() for x in raw.split(",") if x.strip())
    return raw
