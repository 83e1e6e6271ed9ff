"""API routers, one module per area; each exposes `router: APIRouter` (see cloud.app.ROUTER_MODULES)."""
