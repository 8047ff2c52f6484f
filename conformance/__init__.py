"""Black-box conformance suite for OAuth 2.0 authorization servers (RFC 8414 discovery, HTTP only).

Run `python -m conformance --issuer URL`. Nothing here imports the server under test.
"""
