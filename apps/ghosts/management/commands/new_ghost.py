"""`python manage.py new_ghost NAME [--dir DIR] [--title TEXT] [--force]`: write a ghost plug-in and its test.

The module follows the plug-in contract (apps/engine/plugins.py) and passes `check_ghost` and its own test as
generated; edit the rule from there. DIR defaults to HFT_GHOSTS_DIR, else plugins/ (the folder to point
HFT_GHOSTS_DIR at so the desk loads it).
"""

import string
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.engine.plugins import KIND_RE
from apps.engine.registry import GHOSTS

TEMPLATES = Path(__file__).resolve().parents[2] / "ghost_template"


def kind_from_name(name: str) -> str:
    """'My-Breakout' -> 'my_breakout'; CommandError unless it makes a valid, free kind."""
    kind = name.strip().lower().replace("-", "_").replace(" ", "_")
    if not KIND_RE.fullmatch(kind):
        raise CommandError(f"{name!r} does not make a ghost kind: 3-32 characters of a-z, 0-9, _ or -, "
                           "starting with a letter")
    if kind in GHOSTS:
        raise CommandError(f"ghost kind {kind!r} is already registered (built in or loaded); choose another name")
    return kind


class Command(BaseCommand):
    help = "Write a ghost plug-in module and its test from the template (they pass check_ghost as generated)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="the ghost kind, e.g. my_breakout")
        parser.add_argument("--dir", type=Path, default=None,
                            help="folder to write into (default: HFT_GHOSTS_DIR, else plugins/)")
        parser.add_argument("--title", default=None, help="human name (default: from NAME)")
        parser.add_argument("--force", action="store_true", help="overwrite existing files")

    def handle(self, *args, **o) -> None:
        kind = kind_from_name(o["name"])
        folder = o["dir"] or Path(settings.HFT_GHOSTS_DIR or "plugins")
        title = (o["title"] or kind.replace("_", " ").capitalize()).replace('"', "'").strip()[:100]
        module, test = folder / f"{kind}.py", folder / f"test_{kind}.py"
        for path in (module, test):
            if path.exists() and not o["force"]:
                raise CommandError(f"{path} exists; pass --force to overwrite it")
        folder.mkdir(parents=True, exist_ok=True)
        values = {"kind": kind, "title": title, "test_path": test}
        module.write_text(string.Template((TEMPLATES / "ghost.py-tpl").read_text()).substitute(values))
        test.write_text(string.Template((TEMPLATES / "test.py-tpl").read_text()).substitute(values))
        self.stdout.write(f"wrote {module} and {test}\n"
                          f"next: python manage.py check_ghost {kind} --dir {folder}\n"
                          f"      .venv/bin/pytest -q {test}\n"
                          f"      HFT_GHOSTS_DIR={folder} make run  (the ghost starts disabled; enable it on Ghosts)")
