"""The named windows and lifetimes (seconds) every rule uses, so a reviewer finds every number
in one place; the settings' defaults (`config.settings`) are these."""

from __future__ import annotations

ACCESS_TOKEN_TTL = 600
REFRESH_TOKEN_TTL = 30 * 24 * 3600
#: How long after a rotation the same client may present the rotated refresh token again and
#: get the same successor back (a lost token response, issue 13 item 6); 0 turns it off.
#: 30 s covers a client's read timeout plus a retry with backoff; see README, "Refresh tokens".
REFRESH_TOKEN_REUSE_INTERVAL = 30
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
#: Browser sessions (authserver/sessions.py): absolute lifetime from sign-in, idle lifetime
#: from the last request, and how often a request refreshes "last used" in the store.
SESSION_TTL = 8 * 3600
SESSION_IDLE_TTL = 30 * 60
SESSION_TOUCH_INTERVAL = 60

DAY = 24 * 3600
#: Upper bound of a rate-limit window: anything longer is a typo (minutes meant as seconds…).
MAX_RATE_LIMIT_WINDOW = DAY
