"""Where templates come from: the user's folder first, then the defaults shipped with briefbot."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined, select_autoescape

from bot.config import Settings


@cache
def builtin_templates() -> Path:
    """`templates/` of a source checkout, or the copy packaged as `bot.templates` in a wheel."""
    try:
        from importlib.resources import files

        packaged = Path(str(files("bot.templates")))
        if packaged.is_dir():
            return packaged
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parents[2] / "templates"


def template_folders(settings: Settings) -> list[Path]:
    user = settings.resolve(settings.config.templates)
    builtin = builtin_templates()
    return [user, builtin] if user.resolve() != builtin.resolve() else [builtin]


@cache
def _environment(folders: tuple[Path, ...]) -> Environment:
    return Environment(
        loader=ChoiceLoader([FileSystemLoader(str(folder)) for folder in folders]),
        # Escape HTML and MJML too: a `<` in a title must never become markup.
        autoescape=select_autoescape(["html", "xml", "mjml", "mjml.j2", "html.j2"]),
        undefined=StrictUndefined,
        keep_trailing_newline=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def template_env(settings: Settings) -> Environment:
    return _environment(tuple(template_folders(settings)))
