"""RFC 6749 §4.1.1 authorization endpoint: validate the request, ask the user, issue the code."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import abort, g, redirect, render_template, request

from authserver.authorize import (
    AuthorizeError,
    issue_code,
    redirect_location,
    validate_authorization_request,
)
from authserver.errors import AccessDeniedError
from authserver.http.browser import allow_form_targets
from authserver.http.unit_of_work import commit
from authserver.http.web.common import bp, check_csrf, current_user, login_redirect, services


def _authorize_error(e: AuthorizeError) -> Any:
    if e.redirect_uri is None:
        return render_template("error.html", error=e.error.error,
                               description=e.error.description), 400
    return redirect(redirect_location(
        e.redirect_uri,
        {"error": e.error.error, "error_description": e.error.description, "state": e.state},
        issuer=services().settings.issuer,
    ), 303)


@bp.route("/authorize", methods=["GET", "POST"])
def authorize() -> Any:
    s = services()
    params = request.args if request.method == "GET" else request.form
    try:
        req = validate_authorization_request(
            g.db, params.to_dict(flat=False), supported_scopes=s.settings.scopes,
            known_resources=s.known_resources(), cimd=s.cimd, now=g.now,
        )
    except AuthorizeError as e:
        return _authorize_error(e)
    user = current_user()
    if user is None:
        if request.method == "POST":
            abort(400, "Sign in first")
        return login_redirect()
    allow_form_targets(req.redirect_uri)  # both decisions redirect there
    if request.method == "GET":
        from authserver.presentation import client_identity, scope_in_words

        identity = client_identity(req.client, trusted_hosts=s.settings.cimd_trusted_hosts)
        return render_template(
            "consent.html",
            client=identity, client_name=identity.name,
            redirect_host=urlsplit(req.redirect_uri).hostname or req.redirect_uri,
            scopes=[(sc, scope_in_words(sc)) for sc in req.scope.split()],
            offline=" offline_access " in f" {req.scope} ",
            mandate_lines=_mandate_lines(req.authorization_details),
            resources=req.resources,
            dpop_bound=bool(req.dpop_jkt),
            params=req.as_params(),
        )
    check_csrf()
    if request.form.get("decision") != "allow":
        return _authorize_error(AuthorizeError(
            AccessDeniedError("The user denied the request"), req.redirect_uri, req.state))
    code = issue_code(g.db, req, user, now=g.now)
    commit()  # the code is handed out only once it is stored
    # RFC 9700 §4.12: 303 after a POST, so the browser does not re-post credentials.
    return redirect(redirect_location(req.redirect_uri, {"code": code, "state": req.state},
                                      issuer=s.settings.issuer), 303)


def _mandate_lines(details: list[dict[str, Any]]) -> list[str]:
    from authserver.intent import describe_mandate

    return describe_mandate(details) if details else []
