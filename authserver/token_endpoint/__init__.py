"""The token endpoint (RFC 6749 §3.2) as core code: `request` (the request as the core sees it,
built once at the HTTP edge), `parameters` (the body checks and each grant's allow-list) and
`pipeline` (`handle`: the named steps, in order). The grants are in `authserver.grants`; client
authentication, shared with /introspect and /revoke, is `authserver.client_auth`."""
