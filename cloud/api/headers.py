"""Security headers on every HTTP response of the cloud.

Does: `SecurityHeaders` (pure ASGI middleware) adds

* ``Content-Security-Policy``: scripts, styles, fetches and frames from this origin only, no inline script
  (the dashboard's code is /dashboard/app.js), ``frame-ancestors 'none'`` (no clickjacking frames); a
  response that sets its own policy (the HTML weekly report: no script at all, its one inline stylesheet
  allowed by hash) keeps it;
* ``X-Frame-Options: DENY`` for browsers without frame-ancestors, ``X-Content-Type-Options: nosniff``,
  ``Referrer-Policy: no-referrer`` (dashboard addresses never leak to other sites).

Does not: set HSTS or TLS anything (the TLS reverse proxy does), or CORS (none is allowed).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers += [(n, v) for n, v in _HEADERS if n not in present]
                if b"content-security-policy" not in present:
                    headers.append((b"content-security-policy", CSP.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
