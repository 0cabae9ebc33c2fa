"""What a class's collection screens show (issue 15): the assistant's and a phone's state,
the ``collection`` event of the class stream (``collection_events``), the projector panel's
context (``collection_context``) and the thumbnails, made once per process. The routes are in
app/routers/collection.py.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import OrderedDict
from typing import Any

from fastapi import Request

from cnnlab.app.classroom import Room
from cnnlab.app.classroom import collection_use as use
from cnnlab.app.classroom.collection import Collection, Drawing, drawing_from_json, next_label
from cnnlab.app.classroom.collection_store import CollectionStore, collection_store_for
from cnnlab.app.errors import InputError
from cnnlab.app.settings import settings_for

__all__ = ["FIRST_THUMBNAILS", "collection_context", "collection_events", "drawing_png_url", "fooled_json", "fooled_png_url",
           "host_state", "phone_state", "refresh", "thumbnail"]

# The first ``collection`` event of an assistant's screen carries the newest drawings only.
FIRST_THUMBNAILS = 60


def _store(request: Request) -> CollectionStore:
    return collection_store_for(request)


def _version(c: Collection) -> str:
    """Tells one collection of a class from the next (whose ids start again at 1): in the
    thumbnails' addresses, so a browser never shows a cached picture of an earlier one."""
    return format(int(c.opened * 1000), "x")


def drawing_png_url(code: str, c: Collection, drawing_id: int) -> str:
    return f"/api/class/{code}/collection/drawings/{drawing_id}.png?v={_version(c)}"


def fooled_png_url(code: str, c: Collection, test_id: int) -> str:
    return f"/api/class/{code}/collection/tests/{test_id}.png?v={_version(c)}"


def _remaining(c: Collection) -> int | None:
    """Whole seconds until the deadline (0 once passed); None without one. A phone's clock
    is not the server's: screens count down from this."""
    if c.deadline is None:
        return None
    return max(0, math.ceil(c.deadline - time.time()))


def _one_drawing(store: CollectionStore, code: str, drawing_id: int) -> Drawing | None:
    """One drawing, by id (None when it is not there)."""
    getter = getattr(store, "drawing", None)
    if getter is not None:
        return getter(code, drawing_id)
    client = getattr(store, "client", None)
    if client is not None:  # Valkey: one field of the drawings' hash (collection_redis.py)
        from cnnlab.app.classroom.collection_redis import drawings_key

        raw = client.hget(drawings_key(code), str(drawing_id))
        return drawing_from_json(raw) if raw is not None else None
    found = store.drawings(code, after_id=drawing_id - 1)
    return found[0] if found and found[0].id == drawing_id else None


# Thumbnails are made once per process: (store, code, collection opened, id) -> (student, PNG).
_PNG_KEPT = 4096
_pngs: OrderedDict[tuple, tuple[str, bytes]] = OrderedDict()
_pngs_lock = threading.Lock()


def thumbnail(store: CollectionStore, code: str, c: Collection, drawing_id: int) -> tuple[str, bytes] | None:
    """(who drew it, its PNG), or None when there is no such drawing (or it was removed)."""
    if drawing_id in c.removed or not 0 < drawing_id < c.next_id:
        return None
    key = (id(store), code, c.opened, drawing_id)
    with _pngs_lock:
        found = _pngs.get(key)
    if found is not None:
        return found
    drawing = _one_drawing(store, code, drawing_id)
    if drawing is None:
        return None
    found = (drawing.student, use.thumbnail_png(drawing.grid))
    with _pngs_lock:
        _pngs[key] = found
        while len(_pngs) > _PNG_KEPT:
            _pngs.popitem(last=False)
    return found


def refresh(request: Request, code: str) -> Collection | None:
    """The collection, its phase moved on when its training has ended (collection_use)."""
    try:
        return use.refresh_phase(request, code)
    except InputError:  # the class ended meanwhile
        return _store(request).get(code)


# ============================================================================== what screens show


def host_state(c: Collection | None) -> dict[str, Any] | None:
    """The collection for the assistant: everything but who drew what; None when there is none."""
    if c is None:
        return None
    return {
        "phase": c.phase, "labels": list(c.labels), "target": c.target, "deadline": c.deadline,
        "remaining": _remaining(c), "counts": list(c.counts), "total": c.total, "contributors": c.contributors,
        "job": c.job_id, "right": c.right, "fooled": c.fooled,
    }


def phone_state(c: Collection | None, sid: str) -> dict[str, Any] | None:
    """The collection for one phone: the label it is asked for and its own count; None when there is none."""
    if c is None:
        return None
    return {"phase": c.phase, "labels": list(c.labels), "ask": next_label(c, sid), "mine": c.by_student.get(sid, 0),
            "target": c.target, "deadline": c.deadline, "remaining": _remaining(c), "job": c.job_id}


def _drawing_json(code: str, c: Collection, d: Drawing) -> dict[str, Any]:
    return {"id": d.id, "label": d.label, "seat": d.seat, "png": drawing_png_url(code, c, d.id)}


def fooled_json(code: str, c: Collection) -> list[dict[str, Any]]:
    return [{"id": t.id, "label": t.label, "predicted": t.predicted, "seat": t.seat,
             "png": fooled_png_url(code, c, t.id)} for t in c.fooled_recent]


def _json(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


# The collection as last read in this process, per class, with the room's collection_seq it
# was read for: the screens one change wakes read it once (a shared store would otherwise be
# asked once per phone). Keyed by the room's seq, not compared with the collection's own: the
# two part for good once two processes' changes bump the room out of order (collect.change
# then adds 1), and every wake-up would read the store again.
_recent: OrderedDict[tuple[int, str], tuple[int, Collection]] = OrderedDict()
_RECENT_KEPT = 256


def _current(store: CollectionStore, code: str, seq: int) -> Collection | None:
    """The collection for a screen woken at the room's ``collection_seq`` = ``seq``: read
    after the change that set ``seq`` (or a later one), so as new as that change."""
    key = (id(store), code)
    found = _recent.get(key)
    if found is not None and found[0] == seq:
        return found[1]
    c = store.get(code)
    if c is None:
        _recent.pop(key, None)
        return None
    _recent[key] = (seq, c)
    _recent.move_to_end(key)
    while len(_recent) > _RECENT_KEPT:
        _recent.popitem(last=False)
    return c


def collection_events(request: Request, room: Room, host: bool, sid: str | None,
                      sent: dict[str, Any]) -> list[tuple[str, str]]:
    """The ``collection`` event for one screen of the class's stream, when the collection has
    changed since this screen's last one (``room.collection_seq``); ``sent`` is the stream's
    memory. JSON data:

    - the assistant: ``host_state`` (``phase``, ``labels``, ``target``, ``deadline``,
      ``remaining`` seconds, ``counts``, ``total``, ``contributors``, ``job``, ``right``,
      ``fooled``) plus ``new`` (the drawings with an id above the last one sent, ``{"id",
      "label", "seat", "png"}``; in the first event the newest ``FIRST_THUMBNAILS``),
      ``removed`` (ids of drawings sent before, now gone), ``fooled_new`` (test drawings that
      fooled the model, not sent yet: ``{"id", "label", "predicted", "seat", "png"}``) and
      ``reset`` (true in the first event of a screen or of a new collection: its lists are the
      whole picture, not additions);
    - a phone: ``phone_state`` (``phase``, ``labels``, ``ask``, ``mine``, ``target``,
      ``deadline``, ``remaining``, ``job``), only when something in it changed.

    Nothing while the class never had a collection; ``{"phase": null}`` once a collection
    this screen was shown is gone.
    """
    seq = room.collection_seq
    if host and sent.get("collection_phase") == "train":
        # The training may have ended: the phase moves on (a change, which wakes the streams).
        refresh(request, room.code)
    if sent.get("collection", 0) == seq:  # 0: the class never had one; no store read
        return []
    sent["collection"] = seq
    store = _store(request)
    c = _current(store, room.code, seq)
    if c is None:
        sent.pop("collection_host", None)
        sent.pop("collection_phone", None)
        sent.pop("collection_phase", None)
        return [("collection", _json({"phase": None}))] if sent.pop("collection_shown", None) else []
    sent["collection_shown"] = True
    sent["collection_phase"] = c.phase
    if not host:
        data = phone_state(c, sid or "")
        compared = {k: v for k, v in data.items() if k != "remaining"}
        if sent.get("collection_phone") == compared:
            return []
        sent["collection_phone"] = compared
        return [("collection", _json(data))]
    mine = sent.get("collection_host")
    reset = mine is None or mine["opened"] != c.opened
    if reset:
        mine = sent["collection_host"] = {"opened": c.opened, "last": 0, "removed": set(c.removed), "fooled": 0}
    last = mine["last"]
    new = store.drawings(room.code, after_id=last) if c.next_id - 1 > last else []
    if reset:
        new = new[-FIRST_THUMBNAILS:]
        removed: list[int] = []
    else:
        removed = [i for i in c.removed if i <= last and i not in mine["removed"]]
    mine["removed"] = set(c.removed)
    if new:
        mine["last"] = max(last, new[-1].id)
    fooled = [t for t in fooled_json(room.code, c) if t["id"] > mine["fooled"]]
    if fooled:
        mine["fooled"] = fooled[-1]["id"]
    data = {**host_state(c), "new": [_drawing_json(room.code, c, d) for d in new], "removed": removed,
            "fooled_new": fooled, "reset": reset}
    return [("collection", _json(data))]


def collection_context(request: Request, room: Room) -> dict[str, Any]:
    """What the projector's collection panel (templates/_class_collection.html) needs, merged
    into ``/class/{code}/present``'s context:

    - ``collection``: None when the class has no collection, else ``host_state`` (``phase``,
      ``labels``, ``target``, ``deadline``, ``remaining``, ``counts``, ``total``,
      ``contributors``, ``job``, ``right``, ``fooled``); the thumbnails and the drawings that
      fooled the model come with the stream's first ``collection`` event;
    - ``collection_misclassified``: in the test phase, the held-out drawings the trained
      model got wrong (collection_use.misclassified): ``{"id", "label", "predicted", "png"}``
      (the drawing's thumbnail), never who drew them; else [] (the panel is fetched again
      when the phase changes);
    - ``collection_limits``: the open form's bounds: ``max_labels``, ``label_chars``,
      ``max_target``, ``max_minutes`` (app/settings.py)."""
    settings = settings_for(request.app)
    c = refresh(request, room.code)
    wrong = use.misclassified(request, room.code) if c is not None and c.phase == "test" else []
    return {
        "collection": host_state(c),
        "collection_misclassified": [{"id": m["id"], "label": m["label"], "predicted": m["predicted"],
                                      "png": drawing_png_url(room.code, c, m["id"])} for m in wrong],
        "collection_limits": {"max_labels": settings.collection_max_labels,
                              "label_chars": settings.collection_label_chars,
                              "max_target": settings.collection_max_target,
                              "max_minutes": settings.collection_max_minutes},
    }
