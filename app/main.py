"""Builds the FastAPI application: middleware, static files, error handlers, one router per feature."""

from __future__ import annotations

import asyncio
import functools
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from cnnlab.app import i18n
from cnnlab.app.api_schema import install_openapi
from cnnlab.app.cleanup import run_cleanup
from cnnlab.app.backend import start_hub
from cnnlab.app.budget import BodyBudget
from cnnlab.app.errors import install_error_handlers
from cnnlab.app.guards import RequestGuard
from cnnlab.app.i18n import LocaleMiddleware
from cnnlab.app.routers import api, health, pages
from cnnlab.app.routers import conv
from cnnlab.app.routers import pipeline
from cnnlab.app.routers import lesson_pages
from cnnlab.app.routers import images as image_routes
from cnnlab.app.routers import train_api
from cnnlab.app.routers import datasets_api
from cnnlab.app.routers import train_page
from cnnlab.app.routers import train_inside
from cnnlab.app.routers import train_why
from cnnlab.app.routers import classroom
from cnnlab.app.routers import class_seats
from cnnlab.app.routers import collection
from cnnlab.app.routers import practice
from cnnlab.app.routers import notebooks
from cnnlab.app.jobs import make_queue
from cnnlab.app.security import SecurityMiddleware
from cnnlab.app.session import SessionMiddleware
from cnnlab.app.settings import settings_for
from cnnlab.app.templating import STATIC_DIR, env

try:
    __version__ = version("cnnlab")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0.0.0"


# Pages, stylesheets and scripts shrink to about a quarter; smaller bodies are not worth it.
GZIP_MIN_BYTES = 1024
# Level 6 is within 1% of level 9's size at half to three quarters of its time (measured on
# this app's page, stylesheet and htmx.min.js).
GZIP_LEVEL = 6


class Compression:
    """GZip responses for clients that accept it, except server-sent events.

    A browser's EventSource always sends ``Accept: text/event-stream``; those requests skip
    compression entirely, because Starlette before 1.5 buffered compressed streams, which
    would hold events back (newer versions also exclude that content type themselves).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.gzip = GZipMiddleware(app, minimum_size=GZIP_MIN_BYTES, compresslevel=GZIP_LEVEL)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and any(
            name == b"accept" and b"text/event-stream" in value for name, value in scope["headers"]
        ):
            await self.app(scope, receive, send)
            return
        await self.gzip(scope, receive, send)


@functools.cache
def warm_up() -> None:
    """Once per process: compile every template and read every catalog now, so the first
    visitor after a start is served as fast as the rest (otherwise that page waits ~100 ms).

    Then everything alive (modules, templates, catalogs: all of it lives as long as the
    process) is moved out of the garbage collector's way. A full collection otherwise walks
    it all, stalling every request for ~25 ms about once a second under a class's load;
    frozen, it takes under a millisecond.
    """
    for name in env.list_templates():
        env.get_template(name)
    for locale in i18n.LOCALES:
        i18n.get_translations(locale)
    gc.collect()
    gc.freeze()


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    warm_up()
    # Training jobs run in background processes; at shutdown they are stopped and joined. Tests
    # may run the lifespan of one app twice at once (a live server and a TestClient): they
    # share one runner, stopped when the last of them ends.
    if getattr(_app.state, "jobs_users", 0) == 0:
        _app.state.jobs = make_queue(settings_for(_app), _app)
    _app.state.jobs_users = getattr(_app.state, "jobs_users", 0) + 1
    # Expired uploads and finished jobs are swept even when nobody uploads or asks (app/cleanup.py).
    cleaner = asyncio.create_task(run_cleanup(_app), name="cnnlab-cleanup")
    # With a shared engine, this process's one pub/sub listener (app/backend.py).
    hub = start_hub(_app)
    try:
        yield
    finally:
        cleaner.cancel()
        if hub is not None:
            hub.cancel()
        _app.state.jobs_users -= 1
        if _app.state.jobs_users == 0:
            _app.state.jobs.shutdown()


def create_app() -> FastAPI:
    # Swagger UI and ReDoc load their scripts from a CDN, which breaks the offline promise;
    # the schema itself stays at /openapi.json.
    app = FastAPI(title="CNN Lab", version=__version__, docs_url=None, redoc_url=None, lifespan=lifespan)
    # Innermost of all: JSON bodies (and a few small ones) checked before any route parses them.
    app.add_middleware(BodyBudget)
    # Inside the rest: its refusals (a 100 KB address, ?a=1&a=2, an oversized body) are answered
    # in the visitor's language, as pages or JSON like any other bad input.
    app.add_middleware(RequestGuard)
    app.add_middleware(SessionMiddleware)
    # Inside LocaleMiddleware: a refused cross-site request is answered in the visitor's language.
    app.add_middleware(SecurityMiddleware)
    app.add_middleware(LocaleMiddleware)
    app.add_middleware(Compression)
    install_error_handlers(app)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.include_router(pages.router)
    app.include_router(health.router)
    app.include_router(api.router)
    app.include_router(image_routes.router)
    app.include_router(conv.router)
    app.include_router(pipeline.router)
    app.include_router(train_page.router)
    app.include_router(train_api.router)
    app.include_router(train_inside.router)
    app.include_router(train_why.router)
    app.include_router(datasets_api.router)
    app.include_router(lesson_pages.router)
    app.include_router(classroom.router)
    app.include_router(class_seats.router)
    app.include_router(collection.router)
    app.include_router(practice.router)
    app.include_router(notebooks.router)
    # Statuses the middleware answers before a route runs (400, 403, 413, 414) are in the schema too.
    install_openapi(app)
    return app


app = create_app()
