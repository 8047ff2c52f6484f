"""The layering rule of docs/architecture.md: Flask (and Werkzeug, and Authlib's Flask
integration) is imported only by the HTTP layer (`authserver/http/`), the app factory
(`authserver/app.py`), the fakes in `authserver/testing/` and the demo in `authserver/demo/`.
Everything else is core, testable without a request.

`ALLOWED_TODAY` lists the modules that still break the rule, each with why. It may only shrink:
a listed module that no longer imports Flask fails the test until its entry is deleted.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "authserver"

#: Top-level packages (and Authlib's Flask integration) that only the HTTP layer may import.
HTTP_FRAMEWORKS = ("flask", "werkzeug", "authlib.integrations.flask_client",
                   "authlib.integrations.flask_oauth2")

#: Parts of those packages that are not HTTP. `werkzeug.security` hashes and checks passwords
#: (local accounts' password hashes, authserver/local_accounts.py): no request, no response, no
#: app; core code may use it like any other library.
NOT_HTTP = ("werkzeug.security",)

#: Where HTTP frameworks belong (paths relative to the repository root, "/" for a directory).
HTTP_LAYER = ("authserver/http/", "authserver/app.py", "authserver/testing/", "authserver/demo/")

#: Today's exceptions. Delete an entry when its module is fixed; never add one.
ALLOWED_TODAY: dict[str, str] = {}


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _is_http_framework(module: str) -> bool:
    def within(package: str) -> bool:
        return module == package or module.startswith(package + ".")

    return any(within(f) for f in HTTP_FRAMEWORKS) and not any(within(n) for n in NOT_HTTP)


def _importers() -> dict[str, set[str]]:
    """Module path → the HTTP-framework modules it imports, for every module outside the
    HTTP layer that imports one (TYPE_CHECKING imports included)."""
    root = PACKAGE.parent
    found: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if any(rel == layer or (layer.endswith("/") and rel.startswith(layer))
               for layer in HTTP_LAYER):
            continue
        frameworks = {m for m in _imported_modules(path) if _is_http_framework(m)}
        if frameworks:
            found[rel] = frameworks
    return found


def test_flask_is_imported_only_in_the_http_layer() -> None:
    offenders = {rel: sorted(mods) for rel, mods in _importers().items()
                 if rel not in ALLOWED_TODAY}
    assert not offenders, (
        "Flask/Werkzeug imported outside authserver/http/, app.py, testing/ and demo/ "
        f"(docs/architecture.md, 'What may import what'): {offenders}")


def test_the_allowlist_only_shrinks() -> None:
    importers = _importers()
    stale = sorted(rel for rel in ALLOWED_TODAY if rel not in importers)
    assert not stale, f"no longer imports Flask: delete its ALLOWED_TODAY entry: {stale}"


def test_the_rule_sees_an_import() -> None:
    assert _is_http_framework("flask.sessions") and _is_http_framework("werkzeug")
    assert not _is_http_framework("flasky") and not _is_http_framework("authlib.jose")
    assert not _is_http_framework("werkzeug.security")
    assert not _is_http_framework("werkzeug.security.generate_password_hash")
    assert _is_http_framework("werkzeug.securityx") and _is_http_framework("werkzeug.serving")
    here = _imported_modules(Path(__file__))
    assert "ast" in here and "pathlib.Path" in here
