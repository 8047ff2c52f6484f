"""`--authorize-cmd` hook: a browser-less sign-in and consent (RFC 6749 §4.1.1 front channel).

    python -m conformance.hooks.authorize --state STATE.json AUTHORIZATION_URL

Follows the authorization URL like a browser would: the server sends us to its sign-in page, we
post the local test account's username and password (with the page's csrf_token), come back to
the authorization endpoint, submit its consent form with "allow", and print the Location of the
final redirect to the client's redirect_uri (code, state, iss). The redirect_uri is never
fetched. Exits non-zero if the server strays from that path.
"""

from __future__ import annotations

import argparse
import sys
from urllib.parse import urljoin, urlsplit

import requests

from conformance.hooks.common import HTTP_TIMEOUT, HookError, csrf_from, forms, load_json

MAX_HOPS = 10


def _is_client_redirect(location: str, issuer: str) -> bool:
    """A redirect that leaves the issuer's origin goes to the client: stop there."""
    a, b = urlsplit(location), urlsplit(issuer)
    return (a.scheme, a.netloc) != (b.scheme, b.netloc)


def authorize(url: str, state: dict[str, object]) -> str:
    issuer = str(state["issuer"])
    user = state["local_user"]
    assert isinstance(user, dict)
    http = requests.Session()
    resp = http.get(url, allow_redirects=False, timeout=HTTP_TIMEOUT)
    for _ in range(MAX_HOPS):
        if resp.is_redirect:
            location = urljoin(resp.url, resp.headers["Location"])
            if _is_client_redirect(location, issuer):
                return location
            resp = http.get(location, allow_redirects=False, timeout=HTTP_TIMEOUT)
            continue
        if resp.status_code != 200:
            raise HookError(f"{urlsplit(resp.url).path} answered {resp.status_code}")
        page_forms = forms(resp.text)
        login = next((f for f in page_forms
                      if any(name == "password" for name, _ in f["fields"])), None)
        consent = next((f for f in page_forms
                        if ("decision", "allow") in f["buttons"]), None)
        data: list[tuple[str, str]]
        if login is not None:
            filled = {"csrf_token": csrf_from(resp.text), "username": str(user["username"]),
                      "password": str(user["password"])}
            data = [(k, v) for k, v in login["fields"] if k not in filled]
            data += list(filled.items())
            target = urljoin(resp.url, login["action"])
        elif consent is not None:
            # Repeated names (several `resource` inputs) must all be sent back.
            data = [*consent["fields"], ("decision", "allow")]
            target = urljoin(resp.url, consent["action"])
        else:
            raise HookError(f"{urlsplit(resp.url).path}: neither a sign-in nor a consent form")
        resp = http.post(target, data=data, allow_redirects=False, timeout=HTTP_TIMEOUT)
    raise HookError("too many redirects")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--state", required=True)
    p.add_argument("url")
    args = p.parse_args(argv)
    try:
        print(authorize(args.url, load_json(args.state)))
    except (HookError, requests.RequestException) as e:
        print(f"authorize hook: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
