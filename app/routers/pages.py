"""HTML pages that belong to no single lesson section: the home page."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse

from cnnlab.app.lesson import SECTIONS, is_served
from cnnlab.app.templating import render

router = APIRouter(tags=["pages"])


@router.get("/", name="home", response_class=HTMLResponse)
def home(request: Request) -> HTMLResponse:
    sections = [{"section": s, "available": is_served(request.app, s.path)} for s in SECTIONS]
    return render(request, "index.html", {"sections": sections}, fragment="content")
