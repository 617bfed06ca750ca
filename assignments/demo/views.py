"""``/demo/``: the React package at work against this server (``CANARY_DEMO``; on with DEBUG)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from assignments.demo.services import demo_prepare, demo_rules

# Built from clients/react/demo by `npm run build:demo` and committed, so the page
# needs no node at run time.
BUNDLE = Path(__file__).resolve().parent / "canary-demo.js"


def _enabled() -> None:
    if not settings.CANARY_DEMO:
        raise Http404("The demo page is off (CANARY_DEMO).")


@require_GET
def demo_page(request: HttpRequest) -> HttpResponse:
    _enabled()
    origin = f"{request.scheme}://{request.get_host()}"
    setup = demo_prepare(origin=origin)
    config = {
        "baseUrl": "",
        "token": setup.token,
        "rulesetId": setup.ruleset_id,
        "users": [setup.canary_user, setup.other_user],
        "userId": request.GET.get("user") or setup.canary_user,
    }
    response = render(request, "assignments/demo.html", {"config": config})
    response["Cache-Control"] = "no-store"  # the page carries a fresh token
    return response


@require_GET
def demo_bundle(request: HttpRequest) -> HttpResponse:
    _enabled()
    return HttpResponse(_bundle(), content_type="text/javascript; charset=utf-8")


@cache
def _bundle() -> bytes:
    return BUNDLE.read_bytes()


@require_GET
def demo_rule_list(request: HttpRequest) -> JsonResponse:
    _enabled()
    version = request.GET.get("version", "")
    return JsonResponse({"version": version, "rules": demo_rules(version=version)})
