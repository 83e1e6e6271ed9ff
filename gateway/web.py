"""The station's local sample-registration page (抽样登记), served on the station LAN.

Does: a small Starlette app, phone-sized, Chinese first with English second, no script at all (plain HTML
forms, one stylesheet file): `GET /` the form (producers of this village from the last config push, so it
works offline) and the latest registrations with their delivery state; `POST /samples` registers through
`gateway.samples.SampleDesk` and redirects to `GET /samples/{code}`, the label (big code + QR code) to write
on or stick to the bag; a refused registration re-renders the form with the reason (422); with a metrics
registry (`[web] metrics`, gateway.metrics), `GET /metrics` in the Prometheus text format. `WebServer` runs
it with uvicorn in a thread.

Does not: authenticate (it listens on the station's own LAN; bind it to 127.0.0.1 otherwise), or send
anything (the outbox + MQTT link deliver registrations).
"""

from __future__ import annotations

import html
import logging
import threading
import time
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import GatewayError, RegistrationError
from gateway.samples import SampleDesk, SampleForm
from kuaijian.qr import qr_svg

log = logging.getLogger("gateway.web")
STATIC = Path(__file__).with_name("static")
MAX_FORM_BYTES = 16 * 1024


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _page(title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{_e(title)}</title><link rel="stylesheet" href="/static/station.css"></head>'
        f"<body><main>{body}</main></body></html>"
    )


def _form(desk: SampleDesk, error: str | None = None, values: dict[str, str] | None = None) -> str:
    v = values or {}
    producers = desk.producers()
    options = "".join(
        f'<option value="{_e(p.ref)}"{" selected" if v.get("producer") == p.ref else ""}>'
        f"{_e(p.name)}（{_e(p.kind)}）{_e('、'.join(p.products))}</option>"
        for p in producers
    )
    empty = (
        ""
        if producers
        else '<p class="warn">尚未收到本村生产主体名单 (no producer list received from the cloud yet)</p>'
    )
    rows = "".join(
        f'<tr><td><a href="/samples/{quote(r["code"])}">{_e(r["code"])}</a></td><td>{_e(r["producer_name"])}</td>'
        f"<td>{_e(r['product'])}</td><td>{_e(r['batch'])}</td>"
        f"<td>{'已上传 sent' if r['delivered'] else '待上传 queued'}</td></tr>"
        for r in desk.recent()
    )

    def field(name: str, label: str, kind: str = "text", extra: str = "") -> str:
        return (
            f'<label>{label}<input name="{name}" type="{kind}" value="{_e(v.get(name, ""))}" {extra}></label>'
        )

    err = "" if error is None else f'<p class="error" role="alert">{_e(error)}</p>'
    body = (
        f"<h1>抽样登记 <small>Sample registration · {_e(desk.station)}</small></h1>{err}{empty}"
        + _tasks_html(desk)
        + '<form method="post" action="/samples">'
        f'<label>生产主体 Producer<select name="producer" required>{options}</select></label>'
        + field("product", "品种 Product", extra='required maxlength="64"')
        + field("batch", "批次 Batch", extra='required maxlength="64"')
        + field("plot", "地块 Plot", extra='maxlength="64"')
        + field("quantity_kg", "数量（千克）Quantity (kg)", "number", 'required min="0.01" step="0.01"')
        + field("market_date", "计划上市日期 Planned market date", "date")
        + field("sampler", "抽样人 Sampler", extra='required maxlength="64"')
        + field("retest_of", "复检原样品编号 Retest of (code)", extra='maxlength="16"')
        + '<button type="submit">登记 Register</button></form>'
        "<h2>最近登记 Recent</h2><table><thead><tr><th>编号 Code</th><th>生产主体</th><th>品种</th>"
        f"<th>批次</th><th>状态</th></tr></thead><tbody>{rows}</tbody></table>"
    )
    return _page("抽样登记 Sample registration", body)


def _tasks_html(desk: SampleDesk) -> str:
    """The station's sampling tasks (抽检任务) from the last pushed config, with what was registered here."""
    items = "".join(
        f'<li class="task"><strong>{_e(t.title)}</strong> <small>{_e(t.unit)} · {t.start} 至 {t.due}</small><br>'
        f"本站已登记 registered here {n} · 目标 target {t.target}"
        + (f" · 品种 {_e('、'.join(t.products))}" if t.products else "")
        + (f" · 项目 {_e('、'.join(t.analytes))}" if t.analytes else "")
        + ("（全乡镇/村合计进度以云端为准 unit-wide progress is counted in the cloud）" if t.shared else "")
        + "</li>"
        for t, n in desk.tasks()
    )
    if not items:
        return ""
    return f'<section class="tasks"><h2>抽检任务 Sampling tasks</h2><ul>{items}</ul></section>'


CSP = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'"


class SecurityHeaders:
    """ASGI middleware: a Content-Security-Policy without any script, and nosniff, on every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["Content-Security-Policy"] = CSP
                headers["X-Content-Type-Options"] = "nosniff"
            await send(message)

        await self.app(scope, receive, send_with_headers)


def build_app(desk: SampleDesk, metrics: CollectorRegistry | None = None) -> Starlette:
    """The registration page app over `desk`; `/metrics` too when a `metrics` registry is given."""

    async def index(request: Request) -> Response:
        return HTMLResponse(_form(desk))

    async def register(request: Request) -> Response:
        raw = await request.body()
        if len(raw) > MAX_FORM_BYTES:
            return HTMLResponse(_form(desk, "表单过大 (form too large)"), status_code=413)
        values = {k: v[0].strip() for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
        try:
            quantity = float(values.get("quantity_kg", ""))
        except ValueError:
            return HTMLResponse(
                _form(desk, "数量须为数字 (quantity must be a number)", values), status_code=422
            )
        try:
            market = date.fromisoformat(values["market_date"]) if values.get("market_date") else None
        except ValueError:
            return HTMLResponse(_form(desk, "日期格式错误 (bad date)", values), status_code=422)
        form = SampleForm(
            producer=values.get("producer", ""),
            product=values.get("product", ""),
            batch=values.get("batch", ""),
            quantity_kg=quantity,
            sampler=values.get("sampler", ""),
            plot=values.get("plot") or None,
            market_date=market,
            retest_of=values.get("retest_of") or None,
        )
        try:
            doc = desk.register(form)
        except RegistrationError as exc:
            return HTMLResponse(_form(desk, str(exc), values), status_code=422)
        except GatewayError as exc:
            log.exception("registration failed")
            return HTMLResponse(_form(desk, f"保存失败 (could not store): {exc}", values), status_code=503)
        return RedirectResponse(f"/samples/{quote(doc['code'])}", status_code=303)

    async def label(request: Request) -> Response:
        code = request.path_params["code"]
        found = [r for r in desk.outbox.registrations(1000, prefix=code) if r["code"] == code]
        if not found:
            return HTMLResponse(_page("未找到 Not found", "<h1>未找到该样品 Sample not found</h1>"), 404)
        r = found[0]
        body = (
            f'<h1>样品编号 Sample code</h1><p class="code" id="code">{_e(r["code"])}</p>'
            f'<div class="qr">{qr_svg(r["code"])}</div>'
            f"<dl><dt>生产主体 Producer</dt><dd>{_e(r['producer_name'])}</dd>"
            f"<dt>品种 Product</dt><dd>{_e(r['product'])}</dd><dt>批次 Batch</dt><dd>{_e(r['batch'])}</dd>"
            f"<dt>数量 Quantity</dt><dd>{_e(r['quantity_kg'])} kg</dd>"
            f"<dt>抽样人 Sampler</dt><dd>{_e(r['sampler'])}</dd>"
            f"<dt>状态 State</dt><dd>{'已上传 sent' if r['delivered'] else '待上传 queued (offline)'}</dd></dl>"
            "<p>请把编号写在样品袋上，并在检测仪上输入该编号。Write the code on the bag and key it into the analyzer.</p>"
            '<p><a href="/">继续登记 Register another</a></p>'
        )
        return HTMLResponse(_page(f"样品 {r['code']}", body))

    async def css(request: Request) -> Response:
        return FileResponse(STATIC / "station.css", media_type="text/css")

    routes = [
        Route("/", index),
        Route("/samples", register, methods=["POST"]),
        Route("/samples/{code}", label),
        Route("/static/station.css", css),
    ]
    if metrics is not None:
        registry = metrics

        def scrape(request: Request) -> Response:  # sync: the outbox read runs in the thread pool
            return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

        routes.append(Route("/metrics", scrape))
    return Starlette(middleware=[Middleware(SecurityHeaders)], routes=routes)


class WebServer:
    """uvicorn serving `build_app(desk, metrics)` in a daemon thread; `start()` returns once it listens."""

    def __init__(
        self, desk: SampleDesk, host: str, port: int, metrics: CollectorRegistry | None = None
    ) -> None:
        app = build_app(desk, metrics)
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="kj-web", daemon=True)

    def start(self, timeout: float = 10.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            self._thread.join(0.02)  # wakes early if the server thread dies (e.g. port in use)
        if not self._server.started:
            raise GatewayError("web page could not start (port in use?)")

    @property
    def port(self) -> int:
        for server in self._server.servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        raise GatewayError("web page is not listening")

    def stop(self, timeout: float = 5.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)
