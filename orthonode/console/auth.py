"""Who may act: read-only for everyone who reaches the port; retry and discard with the ``web_token``.

The token comes as ``Authorization: Bearer <token>`` (scripts) or in the console's session cookie, set by
the sign-in form (HttpOnly, SameSite=Strict, so another site cannot make the browser send it: the actions'
forms need no separate CSRF token). Comparison is constant-time (``secrets.compare_digest``).
"""

from __future__ import annotations

import secrets

from fastapi import HTTPException, Request, status

COOKIE = "orthonode_token"


def presented_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.cookies.get(COOKIE)


def token_matches(expected: str | None, presented: str | None) -> bool:
    if not expected or not presented:
        return False
    return secrets.compare_digest(expected.encode(), presented.encode())


def may_act(request: Request) -> bool:
    expected = request.app.state.console.token
    return token_matches(expected, presented_token(request))


def require_token(request: Request) -> None:
    """FastAPI dependency of every action: 401 without the token, 403 with a wrong one, and 403 when the
    node has no token configured (the console is then read-only by design)."""
    if request.app.state.console.token is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "actions are disabled: no web_token is configured")
    presented = presented_token(request)
    if presented is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "this action needs the operator token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not may_act(request):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "wrong operator token")
