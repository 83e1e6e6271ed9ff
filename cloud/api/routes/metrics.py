"""GET /metrics: the Prometheus text exposition of the app's registry (cloud.metrics).

Protected: the caller sends `Authorization: Bearer <token>` with either the `metrics_token` setting (for a
Prometheus server, which has no user) or the access/machine token of an admin user. Anyone else gets 401
(no or unknown token) or 403 (a valid token of a user who is not an admin). Not in the OpenAPI schema: it is
not JSON.

Does not: count anything (cloud.metrics, the ingest worker).
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cloud.api.deps import ClockDep, Credentials, DbDep, SettingsDep
from cloud.auth import user_for_token
from cloud.errors import Forbidden, Unauthenticated
from cloud.metrics import CloudMetrics

router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=False)
def metrics(
    request: Request, settings: SettingsDep, clock: ClockDep, db: DbDep, credentials: Credentials
) -> Response:
    if credentials is None:
        raise Unauthenticated("missing bearer token", code="auth.missing")
    token = credentials.credentials
    expected = settings.metrics_token
    if expected is None or not hmac.compare_digest(token.encode(), expected.encode()):
        user = user_for_token(db, token, clock.now())
        if not user.is_admin:
            raise Forbidden("metrics are for admins and the metrics token")
    registry: CloudMetrics = request.app.state.metrics
    return Response(generate_latest(registry.registry), media_type=CONTENT_TYPE_LATEST)
