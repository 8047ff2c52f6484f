"""Settings and the named windows every rule uses.

Settings come from `AUTHSERVER_*` environment variables and, optionally, a TOML file named by
`AUTHSERVER_CONFIG` (its top-level keys are the variable names without the prefix, lower-case;
tables `idps`, `platforms` and `rate_limits` hold structured settings). Environment
beats file; explicit overrides (tests) beat both.

Every setting is declared once (`config/settings.py`), with its type, bounds and documentation
(`config/spec.py`). `Settings.load` (`config/load.py`) checks each value where it comes from and
raises `ConfigError` naming it (`AUTHSERVER_X`, or `x` in the TOML file): unknown keys, wrong
types, out-of-range windows and non-https URLs stop the start. `reference()`
(`config/reference.py`) renders the same declarations as the README's settings table. The
windows and lifetimes are `config/windows.py`. Every name is importable from here.
"""

from __future__ import annotations

from authserver.config.load import ENV_PREFIX
from authserver.config.reference import reference
from authserver.config.settings import DEFAULT_POLICY_DIR, PACKAGE_DIR, Settings
from authserver.config.spec import ConfigError, Spec
from authserver.config.windows import (
    ACCESS_TOKEN_TTL,
    APPROVAL_POLL_INTERVAL,
    APPROVAL_TTL,
    AUTHORIZATION_CODE_TTL,
    CAPABILITY_TOKEN_TTL,
    CLIENT_ASSERTION_MAX_AGE,
    DAY,
    DPOP_FUTURE_SKEW,
    DPOP_NONCE_TTL,
    DPOP_PROOF_WINDOW,
    JWT_LEEWAY,
    MAX_RATE_LIMIT_WINDOW,
    REFRESH_TOKEN_REUSE_INTERVAL,
    REFRESH_TOKEN_TTL,
    SESSION_IDLE_TTL,
    SESSION_TOUCH_INTERVAL,
    SESSION_TTL,
    USER_ASSERTION_TTL,
)

__all__ = [
    "ACCESS_TOKEN_TTL",
    "APPROVAL_POLL_INTERVAL",
    "APPROVAL_TTL",
    "AUTHORIZATION_CODE_TTL",
    "CAPABILITY_TOKEN_TTL",
    "CLIENT_ASSERTION_MAX_AGE",
    "DAY",
    "DEFAULT_POLICY_DIR",
    "DPOP_FUTURE_SKEW",
    "DPOP_NONCE_TTL",
    "DPOP_PROOF_WINDOW",
    "ENV_PREFIX",
    "JWT_LEEWAY",
    "MAX_RATE_LIMIT_WINDOW",
    "PACKAGE_DIR",
    "REFRESH_TOKEN_REUSE_INTERVAL",
    "REFRESH_TOKEN_TTL",
    "SESSION_IDLE_TTL",
    "SESSION_TOUCH_INTERVAL",
    "SESSION_TTL",
    "USER_ASSERTION_TTL",
    "ConfigError",
    "Settings",
    "Spec",
    "reference",
]
