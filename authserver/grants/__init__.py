"""Token-endpoint grants, one module each (the token exchange is a package).

Each grant is a `base.Grant`: `GRANT_TYPE`, `PARAMETERS` (what it reads; the pipeline drops the
rest), `AUTH_METHODS`, and `issue(services, req, client)`, a list of named checks, each raising
one typed error, that returns what it issued (`base.Issued`). The pipeline that runs them is
`authserver.token_endpoint.pipeline`.
"""
