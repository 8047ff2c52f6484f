"""Hooks that let the conformance suite drive a test stack (scripts/conformance-stack).

`authorize` and `subject_token` implement `--authorize-cmd` and `--subject-token-cmd`; like the
suite, they talk to the server over HTTP only. `cast` (the test IdP and platforms) and
`provision` (config file, agent key, state file, a platform connection) are the stack's plumbing.
"""
