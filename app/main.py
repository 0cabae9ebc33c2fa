"""Builds the FastAPI application: middleware, static files, error handlers, one router per feature."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from app.errors import install_error_handlers
from app.i18n import LocaleMiddleware
from app.routers import api, health, pages
from app.routers import conv
from app.routers import images as image_routes
from app.templating import STATIC_DIR

try:
    __version__ = version("cnnlab")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0.0.0"


def create_app() -> FastAPI:
    # Swagger UI and ReDoc load their scripts from a CDN, which breaks the offline promise;
    # the schema itself stays at /openapi.json.
    app = FastAPI(title="CNN Lab", version=__version__, docs_url=None, redoc_url=None)
    app.add_middleware(LocaleMiddleware)
    install_error_handlers(app)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.include_router(pages.router)
    app.include_router(health.router)
    app.include_router(api.router)
    app.include_router(image_routes.router)
    app.include_router(conv.router)
    return app


app = create_app()
