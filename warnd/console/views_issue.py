"""Issue a warning: hazard, level, areas or a polygon, valid time, text; preview; send.

The page is one form with three buttons: *fill in text* (headline and
description from the templates and guideline table), *preview* (the
audience, counted exactly as ``POST /v1/match/preview`` counts it, and the
blind spots) and *send* — offered only with a preview of exactly what will
be sent. Sending goes through the operator intake of ``POST /v1/alerts``.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from aiohttp import web

from warnd.api.subscribers import no_seq, preview_audience
from warnd.areas import AdminArea
from warnd.auth import Role
from warnd.console.core import PREFIX, Ctx, ctx_of, field_errors_by_name, page, redirect, render
from warnd.console.forms import (
    INFO_LANGUAGES,
    STATUSES,
    IssueForm,
    Prefill,
    default_times,
    field_of,
    prefill,
)
from warnd.console.submit import body_bytes, new_form_id, submit
from warnd.dispatch.service import shared_renderer
from warnd.errors import AlertInvalid, ConfigError, Forbidden, WarndError
from warnd.jsonform import alert_from_json
from warnd.model import Alert, Level
from warnd.render import Renderer

routes = web.RouteTableDef()


def _renderer(ctx: Ctx) -> Renderer | None:
    try:
        return shared_renderer(ctx.console.settings, ctx.svc.taxonomy)
    except ConfigError:
        return None


def _picker(ctx: Ctx) -> list[dict[str, Any]]:
    """The area picker: the officer's areas (or the office's), their children and
    grandchildren (a prefecture's counties and their townships)."""
    reg = ctx.svc.areas
    prefixes = list(ctx.user.areas)
    if not prefixes:
        office = reg.get(ctx.console.settings.issuer.area_code)
        prefixes = [office.code] if office is not None else [a.code for a in reg.roots()]
    roots: list[AdminArea] = []
    for prefix in prefixes:
        area = reg.get(prefix) if len(prefix) in (2, 4, 6, 9, 12) else None
        if area is not None:
            roots.append(area)
        else:  # a prefix that is no registered area (e.g. "37172"): its top areas
            under = reg.with_prefix(prefix)
            top = min((len(a.code) for a in under), default=0)
            roots.extend(a for a in under if len(a.code) == top)
    out: list[dict[str, Any]] = []
    for root in roots:
        children = [{"area": c, "children": reg.children(c.code)} for c in reg.children(root.code)]
        out.append({"area": root, "children": children})
    return out


def _area_names(ctx: Ctx, form: IssueForm) -> list[str]:
    names: list[str] = []
    for code in form.area_codes([]):
        area = ctx.svc.areas.get(code)
        names.append(area.name if area else code)
    return names


def _prefill(ctx: Ctx, form: IssueForm, *, with_areas: bool = True) -> Prefill | None:
    """The texts the templates and the guideline table give for the form's
    hazard, level and language (and its areas' names)."""
    return prefill(
        _renderer(ctx),
        ctx.svc.taxonomy,
        ctx.console.settings.issuer,
        form.hazard,
        form.level,
        form.language,
        _area_names(ctx, form) if with_areas else [],
    )


def _fill_text(ctx: Ctx, form: IssueForm) -> IssueForm:
    found = _prefill(ctx, form)
    if found is None:
        return form
    return replace(form, headline=found.headline, description=found.description)


def _guide(ctx: Ctx, form: IssueForm) -> tuple[str, ...]:
    found = _prefill(ctx, form, with_areas=False)
    return found.guide if found else ()


def _values(ctx: Ctx, form: IssueForm, **extra: Any) -> dict[str, Any]:
    tax = ctx.svc.taxonomy
    values: dict[str, Any] = {
        "form": form,
        "hazards": [(h.code, h.name(ctx.lang), " ".join(lv.value for lv in h.levels)) for h in tax],
        "levels": [lv.value for lv in Level],
        "info_languages": INFO_LANGUAGES,
        "statuses": STATUSES,
        "picker": _picker(ctx),
        "chosen": set(form.areas),
        "guide": _guide(ctx, form),
        "preview": None,
        "area_map": None,
        "error": None,
        "errors": [],
        "field_errors": {},
        "notice": None,
    }
    values.update(extra)
    return values


@routes.get("/issue")
@page(Role.OPERATOR)
async def issue_form(request: web.Request) -> web.StreamResponse:
    ctx = ctx_of(request)
    onset, expires = default_times(ctx.console.zone)
    form = IssueForm(onset=onset, expires=expires, form_id=new_form_id())
    q = request.query
    if q.get("hazard") in ctx.svc.taxonomy:
        form.hazard = q["hazard"]
    if q.get("level") in {lv.value for lv in Level}:
        form.level = q["level"]
    form = _fill_text(ctx, form)
    return render(ctx, "issue.html", **_values(ctx, form))


@routes.get("/issue/prefill")
@page(Role.OPERATOR)
async def issue_prefill(request: web.Request) -> web.StreamResponse:
    """JSON for the page's script: the texts for a hazard, level and language."""
    ctx = ctx_of(request)
    q = request.query
    form = IssueForm(
        hazard=q.get("hazard", ""),
        level=q.get("level", ""),
        language=q.get("language", "zh-CN") if q.get("language") in INFO_LANGUAGES else "zh-CN",
        areas=q.getall("areas", []),
    )
    found = _prefill(ctx, form)
    if found is None:
        return web.json_response({"error": ctx.t("issue.unknown_hazard")}, status=422)
    return web.json_response(
        {"headline": found.headline, "description": found.description, "guide": found.guide},
        dumps=_dumps,
    )


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)


@routes.post("/issue")
@page(Role.OPERATOR)
async def issue(request: web.Request) -> web.StreamResponse:
    ctx = ctx_of(request)
    form = IssueForm.from_post(await request.post())
    action = (await request.post()).get("action")
    if action == "prefill":
        return render(ctx, "issue.html", **_values(ctx, _fill_text(ctx, form)))
    svc = ctx.svc
    try:
        data = form.body(svc.areas, ctx.console.zone)
        digest = form.digest(data)
        if action == "send" and form.previewed == digest:
            return await _send(ctx, form, data)
        # Preview (asked for, or the form changed since the one shown).
        alert = await alert_from_json(
            data, issuer=svc.settings.issuer, taxonomy=svc.taxonomy, next_seq=no_seq
        )
        preview = await preview_audience(svc, alert)
    except (AlertInvalid, Forbidden) as err:
        return _refused(ctx, form, err)
    changed = action == "send"  # the form differs from what was previewed
    form = replace(form, previewed=digest)
    area_map = ctx.console.maps.build([a["code"] for a in preview["areas"]], {}, alert)
    # Broadest first: an empty township says more than each of its villages.
    preview["blind_spots"].sort(key=lambda b: (len(b["code"]), b["code"]))
    blind = {b["code"] for b in preview["blind_spots"]}
    return render(
        ctx,
        "issue.html",
        **_values(
            ctx,
            form,
            preview=preview,
            area_map=area_map,
            blind=blind,
            classified=_classification(ctx, alert, form),
            notice="changed" if changed else None,
        ),
    )


def _classification(ctx: Ctx, alert: Alert, form: IssueForm) -> dict[str, Any] | None:
    """The hazard and level ingest will record (a level the hazard lacks is moved)."""
    if not alert.infos:
        return None
    info = alert.infos[0]
    if info.level is None or info.level.value == form.level:
        return None
    return {"asked": form.level, "level": info.level.value}


def _refused(ctx: Ctx, form: IssueForm, err: WarndError) -> web.Response:
    by_field, listed = field_errors_by_name(err.errors, field_of)
    values = _values(
        ctx, replace(form, previewed=""), error=err, errors=listed, field_errors=by_field
    )
    return render(ctx, "issue.html", status=err.status, **values)


async def _send(ctx: Ctx, form: IssueForm, data: dict[str, Any]) -> web.StreamResponse:
    svc = ctx.svc
    body = body_bytes(data)

    async def build() -> tuple[Alert, list[str]]:
        alert = await alert_from_json(
            data,
            issuer=svc.settings.issuer,
            taxonomy=svc.taxonomy,
            next_seq=svc.next_identifier_seq,
        )
        return alert, []

    try:
        accepted = await submit(ctx, body, build, form.form_id)
    except (AlertInvalid, Forbidden) as err:
        return _refused(ctx, form, err)
    raise redirect(f"{PREFIX}/alerts/{accepted.record.id}?notice=issued")
