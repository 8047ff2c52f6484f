"""Importing this package registers every check; MODULES fixes the report order."""

import importlib

MODULES = ("metadata", "jwks", "registration", "client_auth", "dpop", "introspection",
           "revocation", "jwt_access_token", "resource_indicators", "authcode", "refresh",
           "token_exchange", "intent", "gateway")

for _name in MODULES:
    importlib.import_module(f"conformance.checks.{_name}")
