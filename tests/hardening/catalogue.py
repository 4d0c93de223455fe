"""Per route: the query and body fields it reads, with the values a browser would send by default.

Built once per module from the resolver, the views' code and the rendered pages (tests/hardening/routes.py).
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from django.db import transaction
from django.test import Client

from tests.hardening.routes import Route, all_routes, form_fields, page_forms, route_of, view_fields
from tests.hardening.world import World


class _Rollback(Exception):
    pass


@contextmanager
def rollback_after() -> Iterator[None]:
    """Run the block in a savepoint that is always rolled back (its writes never reach the next example)."""
    try:
        with transaction.atomic():
            yield
            raise _Rollback
    except _Rollback:
        pass


@dataclass
class Inputs:
    query: dict[str, list[str]] = field(default_factory=dict)  # name -> default values ([] = no default known)
    body: dict[str, list[str]] = field(default_factory=dict)
    choices: dict[str, list[str]] = field(default_factory=dict)  # name -> the valid values a form field lists
    literal: set[str] = field(default_factory=set)  # keys the view's code reads by name (hand-parsed input)
    types: dict[str, str] = field(default_factory=dict)  # name -> "date" | "number" | "json" | "choice" (its form)
    from_pages: bool = False  # a rendered page has a form for this route


def _choices(f) -> list[str]:
    try:
        return [str(v) for v, _ in getattr(f, "choices", []) or [] if str(v)]
    except Exception:  # a ModelChoiceField iterates a queryset; its ids come from the world anyway
        return []


def _type(f) -> str | None:
    from django import forms

    if isinstance(f, forms.DateField | forms.DateTimeField):
        return "date"
    if isinstance(f, forms.IntegerField | forms.FloatField | forms.DecimalField):  # FloatField is an IntegerField
        return "number"
    if isinstance(f, forms.JSONField):
        return "json"
    if isinstance(f, forms.ChoiceField | forms.ModelChoiceField):
        return "choice"
    return None


def sample_args(route: Route, world: World) -> dict[str, str]:
    """Path arguments naming objects that exist (the first id of each kind)."""
    args = {}
    for name, conv in route.converters:
        if conv == "int":
            args[name] = str(world.ids_for(route.key, name)[0])
        elif conv == "path":
            args[name] = "css/desk.css" if route.namespace == "dashboard" else "1"
        else:
            args[name] = "x"
    return args


def build_catalogue(world: World, clients: dict[str, Client]) -> tuple[dict[str, Route], dict[str, Inputs]]:
    routes = {r.key: r for r in all_routes()}
    cat = {key: Inputs() for key in routes}
    for key, r in routes.items():
        keys, fields = view_fields(r.callback)
        inputs = cat[key]
        inputs.literal = set(keys)
        for name in keys:
            inputs.query.setdefault(name, [])
            inputs.body.setdefault(name, [])
        for name, f in fields.items():
            inputs.query.setdefault(name, [])
            inputs.body.setdefault(name, [])
            if ch := _choices(f):
                inputs.choices[name] = ch
            if kind := _type(f):
                inputs.types[name] = kind
    # Render every page a GET can show as the operator and file each form under the route of its action. Not
    # the admin's ~180 pages (Django's, staff only, not fuzzed: see test_fuzz_http.SKIP) nor the two assets.
    with rollback_after():
        for key, r in routes.items():
            if r.regex or r.namespace == "admin" or key == "dashboard:plotly-js":
                continue
            url = r.url(sample_args(r, world))
            response = clients.fresh("operator").get(url)
            if response.status_code == 302:  # a page for strangers only (the login form): as they see it
                response = clients.fresh("anonymous").get(url)
            if response.status_code != 200 or "html" not in response.get("Content-Type", ""):
                continue
            for form in page_forms(response.content.decode(), url):
                target = route_of(form.action, routes)
                if target is None:
                    continue
                inputs = cat[target.key]
                inputs.from_pages = True
                side = inputs.body if form.method == "post" else inputs.query
                for name in form.names:
                    side.setdefault(name, [])
                for name, values in form.values.items():
                    if name != "csrfmiddlewaretoken" and not side.get(name):
                        side[name] = list(values)
                    elif name != "csrfmiddlewaretoken":  # other defaults of the same field (an owner per row)
                        inputs.choices[name] = list(dict.fromkeys([*inputs.choices.get(name, []), *values]))
                side.pop("csrfmiddlewaretoken", None)
    for inputs in cat.values():
        for f_name in list(inputs.choices):
            inputs.choices[f_name] = inputs.choices[f_name][:20]
    return routes, cat


__all__ = ["Inputs", "build_catalogue", "form_fields", "rollback_after", "sample_args"]
