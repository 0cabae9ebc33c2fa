"""The one event-stream helper (app/eventstream.py) behind the class's and a training's
streams: a screen whose class or run no longer exists is told so (issue 12, finding 8),
a reconnecting training stream resumes at its Last-Event-ID, and events are well formed."""

from __future__ import annotations

import time

from bs4 import BeautifulSoup

from cnnlab.app.eventstream import Event

GIVE_UP_SECONDS = 120


def read(client, url: str, most: int = 1000, **headers) -> list[tuple[str, str, str | None]]:
    """(event, data, id) of a stream, until it ends (or ``most`` events)."""
    out, fields = [], {}
    with client.stream("GET", url, headers={"accept": "text/event-stream", **headers}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line == "":
                if "event" in fields:
                    out.append((fields["event"], "\n".join(fields.get("data", [])), fields.get("id")))
                    if len(out) >= most:
                        break
                fields = {}
            elif line.startswith("data: "):
                fields.setdefault("data", []).append(line[len("data: "):])
            elif line.startswith(("event: ", "id: ")):
                key, value = line.split(": ", 1)
                fields[key] = value
    return out


def test_an_event_is_written_line_by_line():
    assert Event("panel", "<p>\n  hi\n</p>", id="7").encode() == "id: 7\nevent: panel\ndata: <p>\ndata:   hi\ndata: </p>\n\n"
    assert Event("view", "").encode() == "event: view\ndata: \n\n"


def test_a_screen_of_a_class_that_no_longer_exists_is_told_so(client):
    # A phone left open across a restart reconnects to a server that has never heard of its
    # class: instead of a 404 (which EventSource retries at growing gaps, saying nothing)
    # it gets one ``closed`` event in its language, and the bar stops listening.
    events = read(client, "/class/ZZZZZ/events")
    assert [name for name, _data, _id in events] == ["closed"]
    assert BeautifulSoup(events[0][1], "html.parser").select_one(".class-closed").get_text(" ", strip=True).startswith(
        "Esta clase ya no existe: el servidor se reinició o la clase terminó.")
    client.cookies.set("cnnlab_lang", "en")
    events = read(client, "/class/ZZZZZ/events")
    assert "This class no longer exists" in events[0][1]


def test_a_run_that_no_longer_exists_is_told_so_in_its_panel(client):
    events = read(client, "/train/jobs/no-such-job/events")
    assert [name for name, _data, _id in events] == ["done"]  # the panel's stream closes on done
    notice = BeautifulSoup(events[0][1], "html.parser").select_one("[data-stream-ended]")
    assert "Este entrenamiento ya no existe en el servidor" in notice.get_text()


def test_a_reconnecting_training_stream_resumes_at_its_last_event_id(client):
    job = client.post("/api/train", json={"dataset": "digits", "epochs": 2}).json()["id"]
    give_up = time.monotonic() + GIVE_UP_SECONDS
    while client.get(f"/api/train/{job}").json()["status"] != "done" and time.monotonic() < give_up:
        time.sleep(0.05)
    # From the start, a finished run is replayed at a pace a class can follow...
    (name, _data, seq), = read(client, f"/train/jobs/{job}/events", most=1)
    assert name == "progress" and int(seq) < 999999
    # ...and a browser that had seen it all gets the end at once.
    events = read(client, f"/train/jobs/{job}/events", **{"last-event-id": "999999"})
    assert [name for name, _data, _id in events] == ["done"]
    assert events[0][2] == "999999"
