"""app/appstate.py: one shared object per app, made on first use under a lock."""

from __future__ import annotations

import threading
from types import SimpleNamespace

from cnnlab.app import appstate
from cnnlab.app.settings import Settings, get_settings


def _bare_app(settings: Settings) -> SimpleNamespace:
    """What store_for / hub_for read of an app: its state and a settings override."""
    return SimpleNamespace(state=SimpleNamespace(), dependency_overrides={get_settings: lambda: settings})


def _within(seconds: float, fn):
    """fn() in a thread; fails (instead of hanging the suite) when it does not return in time."""
    out: dict = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - reported below
            out["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still not made after {seconds} s: the first use deadlocked"
    if "error" in out:
        raise out["error"]
    return out["value"]


def test_making_one_object_may_make_another_first():
    app = _bare_app(Settings())
    inner = _within(5, lambda: appstate.shared(app, "outer", lambda: ("outer", appstate.shared(app, "inner", object))))
    assert app.state.outer is inner and app.state.inner is inner[1]


def test_the_first_class_store_in_valkey_mode_makes_the_hub_without_hanging(redis_url):
    from cnnlab.app import backend
    from cnnlab.app.classroom.store import store_for

    app = _bare_app(Settings(redis_url=redis_url, secret_key="k"))
    store = _within(5, lambda: store_for(app))  # before anything asked for hub_for(app)
    assert app.state.classes is store and backend.hub_for(app) is app.state.hub
