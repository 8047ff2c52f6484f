"""Plain words for the user pages: times, actions and records, scopes, audit events.

No Flask and no HTML here (the templates escape and lay out what these return); every
time-dependent function takes `now`. The pages have no script (their CSP forbids it), so
relative times ("3 minutes ago") are rendered on the server, next to an exact UTC time in a
`<time datetime>` element.
"""

from __future__ import annotations

import re
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from authserver.intent import BULK, DESTRUCTIVE

# --- times -------------------------------------------------------------------------------------


def iso_utc(ts: int | float | None) -> str:
    """`2026-03-12T14:05:09Z` (a `<time datetime>` value)."""
    if ts is None:
        return ""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(ts)))


def readable_utc(ts: int | float | None) -> str:
    """`12 Mar 2026, 14:05 UTC`."""
    if ts is None:
        return ""
    t = time.gmtime(int(ts))
    return f"{t.tm_mday} {time.strftime('%b %Y, %H:%M', t)} UTC"


def _span(seconds: int) -> str:
    for unit, size in (("day", 86_400), ("hour", 3_600), ("minute", 60)):
        if seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'' if n == 1 else 's'}"
    return f"{seconds} second{'' if seconds == 1 else 's'}"


def relative(ts: int | float | None, now: int) -> str:
    """`3 minutes ago`, `in 9 minutes`, `just now`."""
    if ts is None:
        return ""
    delta = int(ts) - int(now)
    if abs(delta) < 10:
        return "just now"
    return f"in {_span(delta)}" if delta > 0 else f"{_span(-delta)} ago"


# --- connections -------------------------------------------------------------------------------

#: How long before a refresh token's inactivity limit the connections page says "expires soon".
EXPIRY_WARNING = 14 * 86_400


def grant_expires_at(idle_lifetime: int | None, has_refresh_token: bool,
                     last_refresh: int | None) -> int | None:
    """When a connection's refresh token dies unless it is used again: the last refresh (or
    connect) plus the platform's inactivity limit (`refresh_idle_lifetime`, e.g. 90 days);
    None when the platform has none, or there is no refresh token to lose."""
    if idle_lifetime is None or not has_refresh_token or last_refresh is None:
        return None
    return int(last_refresh) + idle_lifetime


def expires_soon(expires_at: int | None, now: int) -> bool:
    """True from EXPIRY_WARNING before `expires_at` (and after it)."""
    return expires_at is not None and expires_at - now <= EXPIRY_WARNING


# --- actions and records -----------------------------------------------------------------------

_VERBS = {"read": "Read", "create": "Create", "update": "Change", "delete": "Delete",
          "bulk_update": "Change", "bulk_delete": "Delete"}
_PAST = {"read": "read", "create": "created", "update": "changed", "delete": "deleted",
         "bulk_update": "changed", "bulk_delete": "deleted"}
_INFINITIVE = {"read": "read", "create": "create", "update": "change", "delete": "delete",
               "bulk_update": "change", "bulk_delete": "delete"}


@dataclass(frozen=True)
class Target:
    """What an intent's `resource` names: `deal:acme-123` is the deal `acme-123`."""

    kind: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.name}" if self.name else self.kind


def target_of(resource: str) -> Target:
    kind, sep, name = resource.partition(":")
    if sep:
        return Target(kind, name)
    path, sep, query = resource.partition("?")
    if sep:  # "deals?stage=stale": the deals where stage = stale
        where = " and ".join(part.replace("=", " = ", 1) for part in query.split("&") if part)
        return Target(path, f"where {where}" if where else "")
    return Target(resource, "")


def count_of(intent: Mapping[str, Any]) -> int:
    try:
        return max(1, int(intent.get("count", 1)))
    except (TypeError, ValueError):
        return 1


def what_in_words(intent: Mapping[str, Any]) -> str:
    """`Delete deal acme-123`, `Create 3 records (board launch/tasks)`."""
    action = str(intent.get("action", ""))
    verb = _VERBS.get(action, action.replace("_", " ").capitalize() or "Use")
    target = target_of(str(intent.get("resource", "")))
    count = count_of(intent)
    if count == 1:
        return f"{verb} {target}"
    return f"{verb} {count} records ({target})"


#: A write touching more records than this is bulk whatever its action (policies/step_up.cedar,
#: confirm-large-write).
LARGE_WRITE = 10


def risk_of(intent: Mapping[str, Any]) -> str:
    """`destructive` (deletes), `bulk` (a bulk action, or a write of more than LARGE_WRITE
    records), `write` or `read`."""
    action = str(intent.get("action", ""))
    if action in DESTRUCTIVE:
        return "destructive"
    if action in BULK or (action != "read" and count_of(intent) > LARGE_WRITE):
        return "bulk"
    return "read" if action == "read" else "write"


def confirm_phrase(intent: Mapping[str, Any]) -> str | None:
    """What the person types before Approve works on a destructive or bulk action: the
    record's name for one record, the number of records for several. None: no second step."""
    if risk_of(intent) not in ("destructive", "bulk"):
        return None
    count = count_of(intent)
    if count > 1:
        return str(count)
    target = target_of(str(intent.get("resource", "")))
    return target.name or target.kind


def phrase_matches(expected: str, typed: str | None) -> bool:
    return typed is not None and " ".join(typed.split()).casefold() == expected.casefold()


# --- clients -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientIdentity:
    name: str
    client_id: str
    #: The host of the client's own URI (client_uri, else its first redirect URI), if any.
    domain: str | None
    #: False when the client named itself through open registration (RFC 7591 /register)
    #: or a client metadata document on a host the admin does not trust: nobody checked its
    #: name or its domain.
    verified: bool


def client_identity(client: Any, *, trusted_hosts: Collection[str] = ()) -> ClientIdentity:
    """How the user pages show `client`. A CIMD client (its id a URL) counts as verified only
    if its id's host is exactly one of `trusted_hosts` (the `cimd_trusted_hosts` setting,
    lower-case): the host's owner, whom the admin trusts, wrote its metadata."""
    metadata = dict(getattr(client, "client_metadata", None) or {})
    attributes = dict(getattr(client, "attributes", None) or {})
    client_id = str(getattr(client, "client_id", "") or "")
    domain = None
    # A client metadata document's client is the host of its URL, and nobody vetted it
    # (draft-ietf-oauth-client-id-metadata-document §6.4, authserver.cimd).
    cimd = attributes.get("registration") == "cimd"
    for uri in [client_id if cimd else None, metadata.get("client_uri"),
                *(metadata.get("redirect_uris") or []), metadata.get("jwks_uri")]:
        if isinstance(uri, str):
            try:
                host = urlsplit(uri).hostname
            except ValueError:
                host = None
            if host:
                domain = host
                break
    return ClientIdentity(
        name=str(metadata.get("client_name") or client_id),
        client_id=client_id,
        domain=domain,
        verified=attributes.get("registration") != "open" and (
            not cimd or _url_host(client_id) in trusted_hosts),
    )


def _url_host(url: str) -> str | None:
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    return host.lower() if host else None


# --- scopes -------------------------------------------------------------------------------------

SCOPE_WORDS = {
    "openid": "Confirm who you are (your account id here)",
    "profile": "See your name",
    "email": "See your e-mail address",
    "offline_access": "Keep access while you are away, until you withdraw it",
    "read": "Read data in your name",
    "write": "Create and change data in your name",
}


def scope_in_words(scope: str) -> str:
    return SCOPE_WORDS.get(scope, f"Use the permission “{scope}”")


# --- audit events --------------------------------------------------------------------------------

REFUSED = frozenset({"denied", "invalid", "rate_limited", "error", "expired", "declined"})
ALLOWED = frozenset({"allowed", "approved", "connected"})
WAITING = frozenset({"step_up", "pending"})
#: The Activity page's outcome filter: its value → the outcomes it shows.
OUTCOME_FILTERS: dict[str, frozenset[str]] = {
    "allowed": ALLOWED, "refused": REFUSED, "confirmation": WAITING,
    "changes": frozenset({"revoked", "disconnected", "connected"}),
}

_REASONS = {
    "intent_mismatch": "what it declared does not fit what you asked for: "
                       "possible prompt injection",
    "connection_required": "you have not connected that platform",
    "access_denied": "the policy does not allow it",
    "rate_limited": "too many requests in a short time",
    "expired_token": "the request had expired",
    "invalid_grant": "its credential was not valid",
    "invalid_request": "the request was malformed",
    "invalid_client": "it could not prove who it is",
    "server_error": "an error on our side",
    "temporarily_unavailable": "a service it needs was unavailable",
}
_REASON_TEXT = re.compile(r"[a-z0-9_]+")


def reason_in_words(reason: str | None) -> str | None:
    if not reason:
        return None
    if reason in _REASONS:
        return _REASONS[reason]
    if _REASON_TEXT.fullmatch(reason):
        return reason.replace("_", " ")
    return "refused by policy"


def is_possible_injection(event: Any) -> bool:
    return getattr(event, "reason", None) == "intent_mismatch"


def is_refusal(event: Any) -> bool:
    """Something an agent asked for was refused (the user's own "Decline" is not flagged)."""
    return event.outcome in REFUSED and event.event != "approval"


def event_sentence(event: Any, *, agent: str, platform: str | None) -> str:
    """One sentence for one audit record. `agent` and `platform` are display names."""
    kind, outcome = event.event, event.outcome
    intent = event.intent if isinstance(event.intent, dict) else None
    detail = event.detail if isinstance(event.detail, dict) else {}
    at = f" at {platform}" if platform else ""
    what = what_in_words(intent).lower() if intent else "do something"
    why = reason_in_words(event.reason)
    if getattr(event, "approval_id", None) and event.reason == "access_denied":
        why = "you had declined it"
    because = f": {why}" if why else ""
    if kind == "token_exchange":
        if outcome == "allowed":
            return f"{agent} was allowed to {what}{at}."
        if outcome == "step_up":
            return f"{agent} asked for your confirmation to {what}{at}."
        if outcome == "pending":
            return f"{agent} checked whether you had confirmed “{what}”{at}."
        if outcome == "rate_limited":
            return f"{agent} was slowed down ({what}{at}): too many requests in a short time."
        if outcome == "error":
            return f"{agent}'s request to {what}{at} failed on our side; nothing was done."
        if outcome == "expired":
            return f"{agent}'s request to {what}{at} had expired."
        return f"{agent} was refused when it asked to {what}{at}{because}."
    if kind == "gateway_call":
        action = str(intent.get("action", "")) if intent else ""
        past = _PAST.get(action, "used")
        target = target_of(str(intent.get("resource", ""))) if intent else Target("data", "")
        if outcome == "allowed":
            status = detail.get("status")
            tail = f" (the platform answered {status})" if isinstance(status, int) \
                and status >= 400 else ""
            return f"{agent} {past} {target}{at}{tail}."
        return f"{agent}'s call{at} ({what}) was stopped{because}."
    if kind == "edge_mint":
        if outcome == "allowed":
            return f"Your chat gave {agent} a short-lived pass to act for you."
        return f"Your chat's request for a pass for {agent} was refused{because}."
    if kind == "approval":
        verb = "approved" if outcome == "approved" else "declined"
        return f"You {verb} {agent}'s request to {what}{at}."
    if kind == "connection":
        if outcome == "connected":
            return f"You connected {platform or 'a platform'}."
        return f"You disconnected {platform or 'a platform'}."
    if kind == "agent_withdrawn":
        return f"You withdrew {agent}: everything it held for you stopped working."
    if kind == "deprovision":
        return "Your account was deprovisioned: every agent's access for you ended."
    return f"{kind.replace('_', ' ').capitalize()}: {outcome.replace('_', ' ')}."


def action_infinitive(action: str) -> str:
    return _INFINITIVE.get(action, action.replace("_", " "))
