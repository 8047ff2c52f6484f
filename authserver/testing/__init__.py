"""Real servers for tests and the demo: an OIDC IdP and OAuth platforms on loopback ports.

These are genuine HTTP servers (not mocks); nothing here is imported by the production paths.
"""
