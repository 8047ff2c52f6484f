"""User pages: sign in, the authorization endpoint's consent, connections, approvals, activity.

Browser sessions are server-side (authserver/sessions.py): the cookie (HttpOnly,
SameSite=Lax, Secure and `__Host-` on https) carries only a random session id. Every form
carries a per-session CSRF token. Signing in starts a new session under a new id (no
fixation); signing out, "sign out everywhere" and deprovisioning end sessions in the store.
After sign-in the browser goes only to a path on our own origin (`safe_redirect_path`).
Sign-in attempts are throttled per account and per client address (authserver/ratelimit.py).
Which user is signed in is answered by one function, `current_user()`; how a person proves
it (local accounts for development, or a corporate IdP) sits behind it.
Security headers and error pages are set in one place, authserver/http/browser.py.

One blueprint, `bp` ("web"), defined in `common.py` with what every page shares (the
signed-in user, CSRF, safe redirects, template helpers, notices, the user's audit record);
one module per page family registers its routes on it: `signin.py` (the front door, local and
IdP sign-in, sign-out), `authorize.py` (/authorize), `connections.py`, `approvals.py`,
`activity.py` (with the export) and `agents.py`. Importing this package registers them all.
"""

from __future__ import annotations

from authserver.http.web import (  # noqa: F401  (imported to register their routes on bp)
    activity,
    agents,
    approvals,
    authorize,
    connections,
    signin,
)
from authserver.http.web.common import (
    MAX_NEXT_LENGTH,
    bp,
    check_csrf,
    csrf_token,
    current_user,
    login_redirect,
    safe_next,
    safe_redirect_path,
    services,
)
from authserver.http.web.signin import sign_in

__all__ = ["MAX_NEXT_LENGTH", "bp", "check_csrf", "csrf_token", "current_user",
           "login_redirect", "safe_next", "safe_redirect_path", "services", "sign_in"]
