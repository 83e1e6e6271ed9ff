"""Samples and certificates: GET /api/samples, GET /api/samples/unregistered, GET /api/samples/{station}/{code},
GET /api/producers/{ref}/history; public (no login): GET /verify/{number} (the page a certificate's QR code
opens), GET /verify/{number}.json and GET /verify/{number}/qr.svg.

Does not: decide anything (cloud.samples) — it only reads.
"""

from __future__ import annotations

import html
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from cloud import samples
from cloud.api.deps import CurrentUserDep, DbDep
from cloud.api.pagination import PageDep
from kuaijian.qr import qr_svg
from kuaijian_schema.labels import zh

router = APIRouter(tags=["samples"])

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; frame-ancestors 'none'"


@router.get("/api/samples")
def list_samples(
    db: DbDep,
    user: CurrentUserDep,
    page: PageDep,
    station: Annotated[str | None, Query(max_length=64)] = None,
    producer: Annotated[str | None, Query(max_length=16, description="producer reference P…")] = None,
    status: Literal["pending", "released", "held", "retest"] | None = None,
    node: Annotated[str | None, Query(max_length=64, description="grid node code: samples under it")] = None,
) -> dict[str, Any]:
    """Registered samples in scope with their batch status (可上市/暂停上市/需复检/待检测) and certificate."""
    total, items = samples.list_samples(
        db,
        user,
        station=station,
        producer=producer,
        status=status,
        node=node,
        limit=page.limit,
        offset=page.offset,
    )
    return {"total": total, "limit": page.limit, "offset": page.offset, "items": items}


@router.get("/api/samples/unregistered")
def unregistered(
    db: DbDep,
    user: CurrentUserDep,
    page: PageDep,
    node: Annotated[str | None, Query(max_length=64, description="grid node code: results under it")] = None,
) -> dict[str, Any]:
    """Measurements whose sample id names no registration (未登记): delivered and kept, never dropped."""
    total, items = samples.unregistered_results(db, user, node=node, limit=page.limit, offset=page.offset)
    return {"total": total, "limit": page.limit, "offset": page.offset, "items": items}


@router.get("/api/samples/{station}/{code}")
def get_sample(db: DbDep, user: CurrentUserDep, station: str, code: str) -> dict[str, Any]:
    return samples.get_sample(db, user, station, code)


@router.get("/api/producers/{ref}/history")
def producer_history(db: DbDep, user: CurrentUserDep, ref: str) -> dict[str, Any]:
    """A producer's samples (test history), held batches and certificates."""
    return samples.producer_history(db, user, ref)


@router.get("/verify/{number}.json")
def verify_json(db: DbDep, number: str) -> dict[str, Any]:
    """Public: what a buyer may see of a certificate."""
    return samples.public_certificate(db, number)


@router.get("/verify/{number}/qr.svg")
def verify_qr(db: DbDep, request: Request, number: str) -> Response:
    """Public: the QR code of the certificate's verification page (to print on the certificate)."""
    samples.public_certificate(db, number)  # 404 for an unknown number
    url = str(request.url_for("verify_page", number=number))
    return Response(qr_svg(url), media_type="image/svg+xml", headers={"Content-Security-Policy": CSP})


CONFIRMED = {
    "lab": "，经送检确认 (confirmed by a laboratory)",
    "retest": "，经两次复检确认 (confirmed by two retests)",
}
"""How a batch that had been held was confirmed negative (cloud.samples._summary)."""


@router.get("/verify/{number}", response_class=HTMLResponse, name="verify_page")
def verify_page(db: DbDep, number: str) -> HTMLResponse:
    """Public (no login): the certificate verification page a buyer's phone opens from the QR code."""
    c = samples.public_certificate(db, number)
    e = html.escape
    tests = "".join(
        f"<li>{e(zh(t['analyte']))} ({e(t['analyte'])})："
        f"{e(samples.VERDICT_LABEL.get(t['verdict'], t['verdict']))} ({e(t['verdict'])})"
        f"{e(CONFIRMED.get(t.get('confirmation') or '', ''))}</li>"
        for t in c["tests"]
    )
    state = (
        '<p class="ok" id="state">核验通过：本批次检测合格，可上市 (verified: this batch may go to market)</p>'
        if c["valid"]
        else '<p class="bad" id="state">合格证已撤销：本批次暂停上市 (certificate revoked: batch held)</p>'
    )
    body = f"""<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>承诺达标合格证核验 Certificate check</title>
<style>body{{font-family:sans-serif;max-width:30rem;margin:auto;padding:1rem}}.ok{{color:#0a6b2b;font-weight:bold}}
.bad{{color:#a40000;font-weight:bold}}dt{{color:#555}}dd{{margin:0 0 .5rem}}</style></head><body>
<h1>承诺达标合格证 <small>Compliance certificate</small></h1>{state}
<dl><dt>编号 Number</dt><dd id="number">{e(c["number"])}</dd>
<dt>产品 Product</dt><dd id="product">{e(c["product"])}</dd>
<dt>数量 Quantity</dt><dd>{e(str(c["quantity_kg"]))} kg</dd>
<dt>生产主体 Producer</dt><dd id="producer">{e(c["producer"])}（{e(c["producer_kind"])}）</dd>
<dt>联系人 Contact</dt><dd>{e(c["contact"] or "—")}</dd>
<dt>产地 Village</dt><dd>{e(c["village"])}</dd>
<dt>开具日期 Date</dt><dd>{e(c["issued_on"])}</dd>
<dt>快速检测 Rapid tests</dt><dd><ul>{tests}</ul></dd></dl></body></html>"""
    return HTMLResponse(body, headers={"Content-Security-Policy": CSP})
