"""Runtime settings: one typed object, read from ``CNNLAB_*`` environment variables.

Routes receive it through the ``get_settings`` dependency, so a test swaps it with
``app.dependency_overrides[get_settings] = lambda: Settings(...)``.
"""

from __future__ import annotations

import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Literal

from fastapi import FastAPI
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cnnlab.app.clientaddr import parse_networks
from cnnlab.app.secret import stored_key

Locale = Literal["es", "en"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CNNLAB_", frozen=True)

    # What the server keeps between restarts (the secret key's file). Private to its user.
    data_dir: Path = Field(default_factory=lambda: Path(tempfile.gettempdir()) / "cnnlab-data")
    # Without CNNLAB_SECRET_KEY a random key is made once and kept in data_dir/secret_key
    # (0600), so sessions and practice scores survive a restart; set CNNLAB_SECRET_KEY when
    # several workers or machines must agree on signed cookies.
    secret_key: SecretStr = Field(default_factory=lambda data: SecretStr(stored_key(data["data_dir"])))
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
    # Stored uploads together: past this many bytes the oldest are deleted (app/images.py).
    max_upload_store_bytes: int = Field(default=1024 * 1024 * 1024, ge=16 * 1024 * 1024)

    # What one request may compute (app/budget.py), estimated before anything is computed.
    # The defaults let the /conv page's largest view through (4 filters of 7×7 with padding 8
    # on a 1024×1024 RGB upload: 4·1040·1040 numbers, 629 M multiply-adds).
    max_conv_work: int = Field(default=1_000_000_000, ge=1_000_000)  # multiply-adds F·Ho·Wo·C·HH·WW
    max_map_values: int = Field(default=4_500_000, ge=10_000)  # numbers of the feature maps, F·Ho·Wo
    # Numbers in one JSON body or answer: a 1024×1024 grid and a kernel; one full-resolution
    # feature map of a 1024-pixel upload (1040×1040 with padding 8).
    max_json_values: int = Field(default=1_200_000, ge=10_000)

    # Browser sessions (app/session.py): a random id in a signed cookie.
    session_cookie: str = "cnnlab_session"
    # Training jobs (app/jobs/): two cores, so two trainings at once; the rest wait in line
    # (in-process; with a shared engine, ``cnnlab worker`` processes train instead).
    max_running_jobs: int = Field(default=2, ge=1)
    max_queued_jobs: int = Field(default=8, ge=0)
    max_jobs_per_session: int = Field(default=3, ge=1)
    # Unfinished trainings per client address: half the places (running + waiting), so one
    # address — a script that drops its cookie, or a whole class behind one NAT — never holds
    # them all.
    max_jobs_per_address: int = Field(default=5, ge=1)
    job_time_cap_seconds: float = Field(default=120.0, gt=0)
    # A job nobody has asked about (page, poll or event stream) for this long is stopped.
    job_abandon_seconds: float = Field(default=60.0, gt=0)
    job_ttl_seconds: float = Field(default=1800.0, gt=0)
    max_finished_jobs_per_session: int = Field(default=10, ge=1)
    # app/cleanup.py deletes expired uploads and forgets expired jobs this often (at most half
    # of either time to live), even when nobody uploads or asks about a training.
    cleanup_interval_seconds: float = Field(default=60.0, gt=0)
    # A training process that sends nothing for this long, or that has not ended this long
    # after being asked to stop, is killed and its job marked failed (app/supervise.py).
    job_silence_seconds: float = Field(default=60.0, gt=0)
    job_stop_grace_seconds: float = Field(default=10.0, gt=0)
    # Shared mode (app/jobs/shared.py): a running job whose worker has not written its
    # heartbeat (every second) for this long is marked failed.
    job_lost_seconds: float = Field(default=5.0, gt=0)

    # Connections (app/cli.py): a connection that sends nothing is closed after
    # ``timeout_keep_alive_seconds``; a request's headers must arrive within
    # ``timeout_request_headers_seconds`` of its first byte, and its body may pause at most
    # ``timeout_request_body_seconds``. At most so many connections at once, and per address.
    timeout_keep_alive_seconds: float = Field(default=5.0, gt=0)
    timeout_request_headers_seconds: float = Field(default=10.0, gt=0)
    timeout_request_body_seconds: float = Field(default=15.0, gt=0)
    max_connections: int = Field(default=2000, ge=1)
    max_connections_per_address: int = Field(default=500, ge=1)
    # Event streams (app/eventstream.py) open at once per client address and per session.
    max_streams_per_address: int = Field(default=400, ge=1)
    max_streams_per_session: int = Field(default=8, ge=1)

    # Per-session rate limits (app/ratelimit.py): ``burst`` at once, then so many a minute.
    rate_uploads_per_minute: float = Field(default=20.0, gt=0)
    rate_uploads_burst: int = Field(default=10, ge=1)
    rate_trainings_per_minute: float = Field(default=6.0, gt=0)
    rate_trainings_burst: int = Field(default=4, ge=1)
    rate_answers_per_minute: float = Field(default=30.0, gt=0)
    rate_answers_burst: int = Field(default=10, ge=1)
    # Per-address rate limits, the same shape, sized for 200 students behind one campus NAT
    # (README, "Operator settings"): what a script that drops its cookie still meets.
    rate_address_uploads_per_minute: float = Field(default=200.0, gt=0)
    rate_address_uploads_burst: int = Field(default=200, ge=1)
    rate_address_trainings_per_minute: float = Field(default=60.0, gt=0)
    rate_address_trainings_burst: int = Field(default=60, ge=1)
    rate_address_answers_per_minute: float = Field(default=600.0, gt=0)
    rate_address_answers_burst: int = Field(default=600, ge=1)
    # Seats taken in one class (a student's first arrival, or a return after their seat was
    # freed): a whole room at once, then 100 a minute.
    rate_address_joins_per_minute: float = Field(default=100.0, gt=0)
    rate_address_joins_burst: int = Field(default=250, ge=1)
    # Classes started: 20 an hour.
    rate_address_classes_per_minute: float = Field(default=20 / 60, gt=0)
    rate_address_classes_burst: int = Field(default=20, ge=1)
    # Class codes looked up in vain (typos, ended classes, guesses): 30 at once, then 10 a
    # minute; past it every look-up waits, so a guesser learns nothing more.
    rate_address_lookups_per_minute: float = Field(default=10.0, gt=0)
    rate_address_lookups_burst: int = Field(default=30, ge=1)

    # Classrooms (app/classroom/): a class whose assistant has shown no sign of life (no
    # request, no open page) for this long ends; at most so many students per class and
    # classes per server.
    class_idle_seconds: float = Field(default=3600.0, gt=0)
    # A class with no student seated and no assistant's screen open ends sooner.
    class_empty_seconds: float = Field(default=600.0, gt=0)
    max_class_students: int = Field(default=200, ge=1)
    max_classes: int = Field(default=200, ge=1)
    # A seat is held by an open screen (event stream); after the last one closes it is kept
    # this long (a reload, a phone waking up), then freed (app/seats.py).
    class_seat_grace_seconds: float = Field(default=30.0, gt=0)
    # Seats one address holds that have no screen open yet (joined, stream not yet open).
    class_pending_seats_per_address: int = Field(default=30, ge=1)

    # The class's own dataset (app/classroom/collection*.py): drawings one student may keep
    # in a collection and the class altogether; labels (2 to this many, each at most so
    # many characters), drawings wanted per label, and the longest time limit, in minutes.
    # (The defaults let 60 phones send a drawing every 2 s for two minutes: benchmarks/bench_collection.py.)
    collection_max_per_student: int = Field(default=100, ge=1)
    collection_max_drawings: int = Field(default=4000, ge=1)
    collection_max_labels: int = Field(default=10, ge=2, le=10)
    collection_label_chars: int = Field(default=24, ge=1)
    collection_max_target: int = Field(default=100, ge=1)
    collection_max_minutes: int = Field(default=60, ge=1)
    # Drawings a student sends per minute (app/ratelimit.py; a moving window: one every 2 s
    # puts 31 in a minute).
    collection_drawings_per_minute: int = Field(default=40, ge=1)

    # The shared engine (app/backend.py): empty, everything lives in this process (the
    # default); a ``redis://HOST:PORT/DB`` URL of Valkey or Redis shares classes, limits and
    # training jobs between every web process and ``cnnlab worker`` that use it.
    redis_url: str = ""

    # Reverse proxies whose X-Forwarded-For is believed (app/clientaddr.py): addresses or
    # networks, comma-separated. None by default: the TCP peer is the client.
    trusted_proxies: str = ""

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: str) -> str:
        parse_networks(value)  # a bad entry is a start-up error, not a silent no-op
        return value


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
