"""A POST to the token endpoint (or to /introspect and /revoke, which authenticate clients the
same way) as the core sees it: built once at the HTTP edge, immutable, no framework type."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy.orm import Session


class Form(Mapping[str, str]):
    """An immutable multi-dict of form (or query) parameters: `form[name]` and `get(name)` are
    the first value, `getlist(name)` every value in the order sent."""

    __slots__ = ("_lists",)

    def __init__(self, lists: Mapping[str, Sequence[str]] | None = None) -> None:
        self._lists = {name: tuple(values) for name, values in (lists or {}).items() if values}

    def __getitem__(self, name: str) -> str:
        return self._lists[name][0]

    def __iter__(self) -> Iterator[str]:
        return iter(self._lists)

    def __len__(self) -> int:
        return len(self._lists)

    def __repr__(self) -> str:  # names only: values may be secrets or tokens
        return f"Form({sorted(self._lists)})"

    def getlist(self, name: str) -> list[str]:
        return list(self._lists.get(name, ()))

    def lists(self) -> Iterator[tuple[str, list[str]]]:
        for name, values in self._lists.items():
            yield name, list(values)

    def only(self, names: Collection[str]) -> Form:
        """The parameters among `names`; the others are dropped."""
        return Form({name: values for name, values in self._lists.items() if name in names})


@dataclass(frozen=True)
class TokenRequest:
    """What the token endpoint reads of one request. `dpop` holds every `DPoP` header value
    (DPOP-01 refuses more than one); `now` is the request's one clock reading and `db` its
    session, which the HTTP edge commits once the response is a success."""

    form: Form
    query: Form
    authorization: str | None = field(repr=False)  # credentials: never in a log line
    dpop: tuple[str, ...] = field(repr=False)
    client_ip: str | None
    now: int
    db: Session = field(repr=False)
