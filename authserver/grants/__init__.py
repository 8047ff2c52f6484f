"""Token-endpoint grants, one module each, shaped like Authlib's grants.

Each grant class has `GRANT_TYPE`, `TOKEN_ENDPOINT_AUTH_METHODS`, `validate_token_request()`
(a list of named checks, each raising one typed error) and `create_token_response()`.
"""
