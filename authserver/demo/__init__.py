"""`authserver demo`: the on-behalf-of story, end to end, on loopback (README "Demo").

One process tree: authserver (SQLite + the embedded store), a demo corporate IdP (OIDC), a demo
CRM and a demo project tool (both OAuth providers from `authserver.testing`), a chat edge and a
scripted agent (deterministic, no LLM) that speaks OAuth through requests-oauth2client with DPoP.

- `stack.py`      starts and wires the services (configuration, clients, users, connections)
- `edge.py`       the chat backend: signs the user in at the IdP, mints the user assertion
- `agent.py`      the scripted agent: token exchange with an intent, gateway calls with DPoP
- `scenarios.py`  the five scenarios and what each one expects
- `narrate.py`    terminal output (colour on a TTY only), summary table, the JSON report
"""


def missing_extra() -> str | None:
    """The first module of the `demo` extra that is not installed, or None."""
    try:
        import jwskate  # noqa: F401
        import requests_oauth2client  # noqa: F401
    except ImportError as e:
        return e.name or "the demo extra"
    return None
