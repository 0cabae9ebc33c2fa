"""Runtime settings: one typed object, read from ``CNNLAB_*`` environment variables.

Routes receive it through the ``get_settings`` dependency, so a test swaps it with
``app.dependency_overrides[get_settings] = lambda: Settings(...)``.
"""

from __future__ import annotations

import secrets
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Literal

from fastapi import FastAPI
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

Locale = Literal["es", "en"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CNNLAB_", frozen=True)

    # A fresh random key per process keeps a bare `cnnlab` safe; set CNNLAB_SECRET_KEY when
    # several workers must agree on signed cookies.
    secret_key: SecretStr = Field(default_factory=lambda: SecretStr(secrets.token_urlsafe(32)))
    default_locale: Locale = "es"
    locale_cookie: str = "cnnlab_lang"
    locale_cookie_max_age: int = 365 * 24 * 3600

    # Uploaded images: checked before decoding (bytes) and after reading the header (pixels),
    # so a decompression bomb is refused before it is expanded in memory.
    max_upload_bytes: int = Field(default=5 * 1024 * 1024, gt=0)
    max_image_pixels: int = Field(default=4_000_000, gt=0)
    upload_ttl_seconds: int = Field(default=24 * 3600, gt=0)
    # Uploads are normalised and downscaled so their longest side is at most this many pixels;
    # full-resolution feature maps are computed at this stored size.
    max_stored_side: int = Field(default=1024, ge=16)
    # Only files named by an image id are ever created or deleted here.
    upload_dir: Path = Field(default_factory=lambda: Path(tempfile.gettempdir()) / "cnnlab-uploads")
    # Decoded pixel arrays kept in memory so a stepper request does not decode the image again.
    image_cache_bytes: int = Field(default=64 * 1024 * 1024, ge=0)

    # Browser sessions (app/session.py): a random id in a signed cookie.
    session_cookie: str = "cnnlab_session"
    # Training jobs (app/jobs.py): two cores, so two trainings at once; the rest wait in line.
    max_running_jobs: int = Field(default=2, ge=1)
    max_queued_jobs: int = Field(default=8, ge=0)
    max_jobs_per_session: int = Field(default=3, ge=1)
    job_time_cap_seconds: float = Field(default=120.0, gt=0)
    # A job nobody has asked about (page, poll or event stream) for this long is stopped.
    job_abandon_seconds: float = Field(default=60.0, gt=0)
    job_ttl_seconds: float = Field(default=1800.0, gt=0)
    max_finished_jobs_per_session: int = Field(default=10, ge=1)
    # app/cleanup.py deletes expired uploads and forgets expired jobs this often (at most half
    # of either time to live), even when nobody uploads or asks about a training.
    cleanup_interval_seconds: float = Field(default=60.0, gt=0)

    # Per-session rate limits (app/ratelimit.py): ``burst`` at once, then so many a minute.
    rate_uploads_per_minute: float = Field(default=20.0, gt=0)
    rate_uploads_burst: int = Field(default=10, ge=1)
    rate_trainings_per_minute: float = Field(default=6.0, gt=0)
    rate_trainings_burst: int = Field(default=4, ge=1)
    rate_answers_per_minute: float = Field(default=30.0, gt=0)
    rate_answers_burst: int = Field(default=10, ge=1)

    # Classrooms (app/classroom.py): a class whose assistant has shown no sign of life (no
    # request, no open page) for this long ends; at most so many students per class and
    # classes per server.
    class_idle_seconds: float = Field(default=3600.0, gt=0)
    max_class_students: int = Field(default=200, ge=1)
    max_classes: int = Field(default=200, ge=1)


@lru_cache
def get_settings() -> Settings:
    return Settings()


def settings_for(app: FastAPI) -> Settings:
    """The settings a route of ``app`` would get, honouring a test's dependency override.

    Middleware and exception handlers run outside FastAPI's dependency injection, so they
    look the override up themselves.
    """
    provider = app.dependency_overrides.get(get_settings, get_settings)
    return provider()
