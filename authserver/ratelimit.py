"""Rate limits per (user, action class) and per agent (docs/standards.md A3: 429).

Sliding-window counters in the shared store (fixed windows, the previous one weighted), so
every worker and host sees one budget and a burst across a window boundary is still limited.
A request's spends are one `Store.incr_windows` (one Redis round trip, however many budgets it
spends, with any keys the caller reads alongside: `hit(read=...)`). A request over any
limit raises `RateLimitedError` (429 `rate_limited`, `Retry-After` = seconds until the request
would fit).
Store failures propagate as `StoreUnavailableError` (503): no store, no token.

Action classes follow Part A1: *read*, *write*, *destructive*. A destructive action is also a
write, so it spends both the destructive and the write budget: the small destructive limit
cannot be used to get extra writes, and deletes count toward the write ceiling.
Every request counts, including rejected ones, and against every budget it touches.

The same counters throttle the front door (`hit`): sign-in attempts per account and per
client address, dynamic registration per address, and the token endpoint per authenticated
client and per address (every grant).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from authserver.errors import RateLimitedError
from authserver.store import Store
from authserver.store import keys as store_keys

ACTION_CLASSES = ("read", "write", "destructive")
AGENT = "agent"
#: Which per-user budgets one request of each action class spends.
_BUDGETS = {"read": ("read",), "write": ("write",), "destructive": ("destructive", "write")}


@dataclass(frozen=True)
class RateLimit:
    limit: int
    window: int

    def __post_init__(self) -> None:
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1:
            raise ValueError("rate limit `limit` must be a positive integer")
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise ValueError("rate limit `window` must be a positive integer (seconds)")


READ_LIMIT = RateLimit(limit=120, window=60)
WRITE_LIMIT = RateLimit(limit=30, window=60)
DESTRUCTIVE_LIMIT = RateLimit(limit=5, window=60)
AGENT_LIMIT = RateLimit(limit=300, window=60)
#: Front-door budgets (`RateLimiter.hit`), by the subject they count.
SIGN_IN_ACCOUNT = "sign_in_account"  # local sign-in attempts per username
SIGN_IN_ADDRESS = "sign_in_address"  # sign-in attempts (local and IdP) per client address
REGISTER = "register"  # POST /register per client address
TOKEN = "token"  # /token requests per authenticated client, every grant
TOKEN_ADDRESS = "token_address"  # /token requests per client address, before authentication
SIGN_IN_ACCOUNT_LIMIT = RateLimit(limit=10, window=900)
SIGN_IN_ADDRESS_LIMIT = RateLimit(limit=300, window=900)
REGISTER_LIMIT = RateLimit(limit=20, window=3600)
TOKEN_LIMIT = RateLimit(limit=1200, window=60)
TOKEN_ADDRESS_LIMIT = RateLimit(limit=6000, window=60)
REQUEST_LIMITS = (SIGN_IN_ACCOUNT, SIGN_IN_ADDRESS, REGISTER, TOKEN, TOKEN_ADDRESS)
DEFAULT_LIMITS: Mapping[str, RateLimit] = MappingProxyType({
    "read": READ_LIMIT,
    "write": WRITE_LIMIT,
    "destructive": DESTRUCTIVE_LIMIT,
    AGENT: AGENT_LIMIT,
    SIGN_IN_ACCOUNT: SIGN_IN_ACCOUNT_LIMIT,
    SIGN_IN_ADDRESS: SIGN_IN_ADDRESS_LIMIT,
    REGISTER: REGISTER_LIMIT,
    TOKEN: TOKEN_LIMIT,
    TOKEN_ADDRESS: TOKEN_ADDRESS_LIMIT,
})


class RateLimiter:
    def __init__(self, store: Store, limits: Mapping[str, RateLimit] = DEFAULT_LIMITS) -> None:
        """`limits` overrides DEFAULT_LIMITS by name; an unknown name raises ValueError."""
        unknown = set(limits) - set(DEFAULT_LIMITS)
        if unknown:
            raise ValueError(f"rate limits: unknown {sorted(unknown)}")
        self.store = store
        self.limits = MappingProxyType({**DEFAULT_LIMITS, **limits})

    @classmethod
    def from_settings(cls, store: Store, mapping: Mapping[str, Any]) -> RateLimiter:
        """Defaults overridden by the `rate_limits` settings table.

        e.g. `{"read": {"limit": 120, "window": 60}}`; unknown names or fields raise ValueError.
        """
        limits = dict(DEFAULT_LIMITS)
        for name, spec in mapping.items():
            if name not in DEFAULT_LIMITS:
                raise ValueError(f"rate_limits: unknown limit {name!r}")
            if not isinstance(spec, Mapping) or set(spec) - {"limit", "window"}:
                raise ValueError(f"rate_limits.{name}: only `limit` and `window` are allowed")
            base = DEFAULT_LIMITS[name]
            limits[name] = RateLimit(
                limit=spec.get("limit", base.limit), window=spec.get("window", base.window)
            )
        return cls(store, limits)

    def _spend(self, spends: Sequence[tuple[str, RateLimit]], now: int,
               read: Sequence[str] = ()) -> tuple[list[int], list[str | None]]:
        """Count one request against each `(key, rule)` of `spends`, in one store round trip
        with `read`'s GETs; the seconds to wait for each budget that is spent, and the values
        read.

        Sliding-window counter: the current fixed window's count plus the previous window's,
        weighted by how much of it still lies within the last `window` seconds. Plain fixed
        windows would let 2 x limit through around a boundary.
        """
        windows = []
        for key, rule in spends:
            index = now // rule.window
            windows.append((f"{key}:{index}", f"{key}:{index - 1}", 2 * rule.window))
        counts, values = self.store.incr_windows(windows, read)
        waits = []
        for (_key, rule), (current, previous) in zip(spends, counts, strict=True):
            limit, window = rule.limit, rule.window
            remaining = window - now % window
            if current * window + previous * remaining > limit * window:
                waits.append(max(1, _retry_after(current, previous, remaining, limit, window)))
        return waits, values

    def hit(self, name: str, subject: str, *, now: int, read: Sequence[str] = ()
            ) -> list[str | None]:
        """Count one request against the front-door budget `name` (REQUEST_LIMITS) of
        `subject` (a username, a client address, a client id); raise RateLimitedError
        (retry_after) once it is spent, StoreUnavailableError if the store cannot answer.
        The store keys of `read` are read in the same round trip: their values are returned."""
        if name not in REQUEST_LIMITS:
            raise ValueError(f"unknown request limit {name!r}")
        waits, values = self._spend(
            [(store_keys.rate_request(name, subject), self.limits[name])], now, read)
        if waits:
            raise RateLimitedError(waits[0])
        return values

    def check(self, *, user_id: str, agent_id: str, action_class: str, now: int) -> None:
        """Count this request against each of its budgets, in one store round trip; raise
        RateLimitedError(retry_after) if any budget is spent.

        Raises ValueError for an unknown action class (a caller bug) and StoreUnavailableError
        (503) if the store cannot answer.
        """
        if action_class not in _BUDGETS:
            raise ValueError(f"unknown action class {action_class!r}")
        spends = [(store_keys.rate_user(budget, user_id), self.limits[budget])
                  for budget in _BUDGETS[action_class]]
        spends.append((store_keys.rate_agent(agent_id), self.limits[AGENT]))
        waits, _ = self._spend(spends, now)
        if waits:
            raise RateLimitedError(max(waits))


def _retry_after(current: int, previous: int, remaining: int, limit: int, window: int) -> int:
    """Seconds until one more request fits, if nothing else arrives meanwhile. `current`
    counts this (refused) request; the retry will count too. Integer arithmetic only.

    This is `Retry-After`: the first instant at which this limiter will accept the retry, so
    a client that waits exactly that long is not refused again. It is not capped at one
    window: the counter spreads the previous window's requests evenly over it, so for a small
    limit the retry may have to wait for the rest of this window and part of the next (limit
    3 a day, 4 counted at 06:30 UTC: 63,000 s + 43,200 s). Capping it would send clients
    back too early, to be refused and counted again."""
    if current + 1 <= limit and previous:
        # Later in this window, once enough of the previous window's tail has slid out.
        wait = remaining - ((limit - current - 1) * window) // previous
        if wait < remaining:
            return wait
    # In the next window, once this one's weight has fallen enough: the retry counts 1 there.
    return remaining + -(-(window * (current - limit + 1)) // current)
