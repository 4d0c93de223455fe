"""Every URL pattern of the project, read from Django's resolver, and the input each one reads.

`all_routes()` walks `get_resolver()`; nothing here lists the desk's URLs by hand, so a URL added to any
urls.py (the research app's, a new app's) is fuzzed and checked by the authorisation matrix the moment it
exists. The fields a route reads come from three places, none written per route:
- the forms of the pages themselves: every page is rendered once (as the operator and as the staff user) and
  each <form>'s inputs are filed under the route its action resolves to, with their default values (so a
  generated request can start from what a browser would send and change a field or two);
- the Form classes a view uses (the view function and the same-module helpers it calls), instantiated;
- the literal names a view reads from request.GET / request.POST (`.get("before")`, `.getlist("runs")`).
"""

import inspect
import re
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import quote, urlsplit

from django import forms
from django.urls import URLPattern, URLResolver, get_resolver
from django.urls.exceptions import Resolver404
from django.urls.resolvers import RoutePattern

_PARAM = re.compile(r"<(?:(?P<conv>[^>:]+):)?(?P<name>[^>]+)>")
# request.GET.get("before"), post.getlist("events"), params.pop("after"): a literal key a view reads
_REQUEST_KEY = re.compile(r"(?:request\.(?:GET|POST)|\bpost|\bparams|\bquery)\s*\.\s*(?:get|getlist|pop)\("
                          r"""\s*f?["']([^"'{}]+)["']""")


@dataclass(frozen=True)
class Route:
    key: str  # "namespace:name", or "<namespace>:<pattern>" for an unnamed pattern
    pattern: str  # the full route: "lab/runs/<int:run_id>/"
    callback: Callable
    regex: bool  # a regex pattern (only the admin's app index and catch-all)
    converters: tuple[tuple[str, str], ...]  # (kwarg, converter: "int" | "path" | "str" | "slug" | "uuid")

    @property
    def view(self) -> str:
        f = inspect.unwrap(self.callback)
        return f"{getattr(f, '__module__', '?')}.{getattr(f, '__qualname__', getattr(f, '__name__', '?'))}"

    @property
    def namespace(self) -> str:
        return self.key.split(":", 1)[0] if ":" in self.key else ""

    def url(self, args: dict[str, str]) -> str:
        """The concrete path with `args` put in (quoted) for each <converter:kwarg>."""
        if self.regex:
            return "/" + _regex_sample(self.pattern)
        return "/" + _PARAM.sub(lambda m: quote(str(args[m["name"]]), safe="/" if m["conv"] == "path" else ""),
                                self.pattern)


def _regex_sample(pattern: str) -> str:
    # The two admin regex routes: the app index (^(?P<app_label>auth|...)/$) and the catch-all ((?P<url>.*)$).
    p = pattern.replace("^", "").replace("$", "")
    p = re.sub(r"\(\?P<app_label>([^|)]+)[^)]*\)", r"\1", p)
    return re.sub(r"\(\?P<url>\.\*\)", "no-such-page/", p)


def _walk(patterns: list, prefix: str, ns: str) -> Iterator[tuple[str, str, Any, bool]]:
    for p in patterns:
        if isinstance(p, URLResolver):
            inner = ":".join(x for x in (ns, p.namespace or "") if x)
            yield from _walk(p.url_patterns, prefix + str(p.pattern), inner)
        elif isinstance(p, URLPattern):
            name = f"{ns}:{p.name}" if ns and p.name else p.name
            yield prefix + str(p.pattern), name or f"{ns}:<{prefix}{p.pattern}>", p, isinstance(p.pattern, RoutePattern)


def all_routes() -> list[Route]:
    """Every reachable URL pattern, in resolver order. A pattern shadowed by an identical earlier one (the
    project's rate-limited login before django.contrib.auth.urls' own) is left out: no request can reach it."""
    seen: set[str] = set()
    routes = []
    for pattern, key, p, is_route in _walk(get_resolver().url_patterns, "", ""):
        if pattern in seen:
            continue
        seen.add(pattern)
        converters = tuple((m["name"], m["conv"] or "str") for m in _PARAM.finditer(pattern)) if is_route else ()
        routes.append(Route(key=key, pattern=pattern, callback=p.callback, regex=not is_route, converters=converters))
    keys = [r.key for r in routes]
    assert len(keys) == len(set(keys)), "two reachable routes with the same name"
    return routes


def route_of(path: str, routes: dict[str, Route]) -> Route | None:
    """The Route a path resolves to (None when it resolves nowhere)."""
    try:
        match = get_resolver().resolve(path)
    except Resolver404:
        return None
    key = match.view_name if match.url_name else None
    if key in routes:
        return routes[key]
    for r in routes.values():  # unnamed patterns (admin's object redirect): by the route string
        if match.route == r.pattern:
            return r
    return None


# --- the fields a view reads: its Form classes and literal request keys ------------------------------------


def _functions_reached(func: Callable, depth: int = 2) -> list[types.FunctionType]:
    """`func` and the module-level functions of its own module it names, `depth` calls deep."""
    func = inspect.unwrap(func)
    if not isinstance(func, types.FunctionType):
        return []
    out, todo = [func], [(func, 0)]
    while todo:
        f, d = todo.pop()
        if d >= depth:
            continue
        for name in f.__code__.co_names:
            g = f.__globals__.get(name)
            if isinstance(g, types.FunctionType) and g.__module__ == func.__module__ and g not in out:
                out.append(g)
                todo.append((g, d + 1))
    return out


def _form_classes(funcs: list[types.FunctionType]) -> list[type[forms.BaseForm]]:
    found = []
    for f in funcs:
        for name in f.__code__.co_names:
            g = f.__globals__.get(name)
            if isinstance(g, type) and issubclass(g, forms.BaseForm) and g not in found:
                found.append(g)
    return found


def form_fields(cls: type[forms.BaseForm]) -> dict[str, forms.Field]:
    """An unbound instance's fields (forms that add fields in __init__, per ghost kind or limit, included)."""
    try:
        return dict(cls().fields)
    except TypeError:  # a form that needs arguments: its declared fields
        return dict(cls.base_fields)


def view_fields(callback: Callable) -> tuple[set[str], dict[str, forms.Field]]:
    """(literal request keys, form fields) a view reads, from its code and its same-module helpers'."""
    funcs = _functions_reached(callback)
    keys: set[str] = set()
    for f in funcs:
        try:
            keys.update(_REQUEST_KEY.findall(inspect.getsource(f)))
        except (OSError, TypeError):
            pass
    classes = _form_classes(funcs)
    view_class = getattr(callback, "view_class", None)  # a class-based view (the login, password views)
    if isinstance(getattr(view_class, "form_class", None), type):
        classes.append(view_class.form_class)
    fields: dict[str, forms.Field] = {}
    for cls in classes:
        fields.update(form_fields(cls))
    return keys, fields


# --- the forms of the rendered pages -----------------------------------------------------------------------


@dataclass
class PageForm:
    method: str  # "get" | "post"
    action: str  # the path it submits to
    values: dict[str, list[str]] = field(default_factory=dict)  # field -> what a browser sends by default
    names: list[str] = field(default_factory=list)  # every field, also unticked boxes and empty selects


class _FormParser(HTMLParser):
    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.page, self.forms, self._form, self._select, self._area, self._opt = page, [], None, None, None, None

    def handle_starttag(self, tag: str, attrs_list: list) -> None:
        a = {k: (v if v is not None else "") for k, v in attrs_list}
        if tag == "form":
            self._form = PageForm(method=(a.get("method") or "get").lower(),
                                  action=urlsplit(a.get("action") or self.page).path or urlsplit(self.page).path)
            self.forms.append(self._form)
        if self._form is None or not a.get("name") and tag != "option":
            return
        f = self._form
        if tag == "input":
            name, kind = a["name"], a.get("type", "text").lower()
            f.names.append(name)
            if kind in ("checkbox", "radio"):
                if "checked" in a:
                    f.values.setdefault(name, []).append(a.get("value", "on"))
            elif kind not in ("submit", "button", "file", "image", "reset"):
                f.values.setdefault(name, []).append(a.get("value", ""))
        elif tag == "select":
            self._select = a["name"]
            self._opt = None
            f.names.append(a["name"])
        elif tag == "option" and self._select:
            value = a.get("value")
            if self._opt is None or "selected" in a:
                self._opt = value
                f.values[self._select] = [value if value is not None else ""]
        elif tag == "textarea":
            self._area = a["name"]
            f.names.append(a["name"])
            f.values[a["name"]] = [""]

    def handle_data(self, data: str) -> None:
        if self._area and self._form is not None:
            self._form.values[self._area][-1] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None
        elif tag == "select":
            self._select = None
        elif tag == "textarea":
            self._area = None


def page_forms(html: str, page: str) -> list[PageForm]:
    p = _FormParser(page)
    p.feed(html)
    return p.forms
