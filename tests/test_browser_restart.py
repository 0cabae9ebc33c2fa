"""A server killed (kill -9) and started again on the same port: screens left open say that
their class or training no longer exists, in their language, within seconds of the server
answering again (issue 12, finding 8). A server of this test's own (tests/serverproc.py),
not the session's shared one, since it is killed.

The only console errors allowed are the failed reconnects while the server is down."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import httpx
from playwright.sync_api import expect

from pagecheck import csp_violations, save_shot, translated
from serverproc import CnnlabProcess

TOLD_WITHIN_SECONDS = 6.0


def loopback_page(browser, server: CnnlabProcess, **options):
    context = browser.new_context(**options)
    context.route("**/*", lambda route, request: route.continue_()
                  if urlsplit(request.url).netloc == f"127.0.0.1:{server.port}" else route.abort())
    page = context.new_page()
    page.set_default_timeout(15_000)
    return context, page


def test_open_screens_say_their_class_or_run_is_gone_after_a_restart(browser, tmp_path, shots_dir):
    first = CnnlabProcess(tmp_path).start()
    phone_context = laptop_context = None
    try:
        code = httpx.post(first.url("/class")).headers["location"].split("/")[2]
        phone_context, phone = loopback_page(browser, first, viewport={"width": 390, "height": 844})
        phone.goto(first.url(f"/class/{code}"))
        expect(phone.locator("#class-mode")).to_have_text(translated("Following the assistant"))

        laptop_context, laptop = loopback_page(browser, first, viewport={"width": 1280, "height": 720})
        laptop.goto(first.url("/train?lang=en"))
        # 30 epochs of digits are replayed at a pace a class can follow: still "Training…" for a while.
        job = laptop.request.post(first.url("/api/train"), data={"dataset": "digits", "epochs": 30}).json()["id"]
        laptop.goto(first.url(f"/train/jobs/{job}"))
        expect(laptop.locator("#train-live .train-status")).to_have_attribute("data-status", "running")

        first.kill()  # kill -9: no farewell event, the streams just drop
        second = CnnlabProcess(tmp_path, port=first.port).start()
        answering = time.monotonic()
        try:
            expect(phone.locator("#class-closed-message")).to_contain_text(
                translated("This class no longer exists: the server was restarted, or the class ended."),
                timeout=TOLD_WITHIN_SECONDS * 1000)
            expect(phone.locator("#class-mode")).to_be_hidden()
            phone_told = time.monotonic() - answering
            expect(laptop.locator("#train-live [data-stream-ended]")).to_contain_text(
                "This training no longer exists on the server", timeout=TOLD_WITHIN_SECONDS * 1000)
            expect(laptop.locator("#train-stop")).to_be_hidden()
            laptop_told = time.monotonic() - answering
            save_shot(phone, shots_dir, "class-gone-after-restart-390x844.png")
            save_shot(laptop, shots_dir, "train-gone-after-restart-1280x720.png")
        finally:
            second.kill()
    finally:
        first.kill()
        for context in (phone_context, laptop_context):
            if context is not None:
                context.close()
    assert phone_told < TOLD_WITHIN_SECONDS and laptop_told < TOLD_WITHIN_SECONDS
    assert csp_violations(phone) == [] and csp_violations(laptop) == []
