"""Liveness probe for the container HEALTHCHECK and the test server fixture."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["health"])


@router.get("/healthz", name="healthz", include_in_schema=False)
def healthz() -> dict[str, str]:
    return {"status": "ok"}
