"""E-mail templates (Jinja2) by name and the buyer's locale: English, Simplified Chinese, Dutch.

Each template is ``templates/<name>/<locale>.txt`` whose first line is ``Subject: …``, and an
optional ``<locale>.html``. An unknown locale falls back to English.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import (
    Environment,
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateNotFound,
    select_autoescape,
)

SUPPORTED_LOCALES = ("en", "zh", "nl")
_DIR = Path(__file__).parent / "templates"
_env = Environment(
    loader=FileSystemLoader(_DIR),
    autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
    undefined=StrictUndefined,
    keep_trailing_newline=True,
    # the templates ship with the code: no stat() of each file at every render
    auto_reload=False,
)


def _money(amount: int, currency: str) -> str:
    decimals = 0 if currency.upper() in {"JPY", "KRW"} else 2
    value = amount / 10**decimals if decimals else amount
    return f"{currency.upper()} {value:,.{decimals}f}"


_env.filters["money"] = _money


def normalize_locale(locale: str | None) -> str:
    """``zh-CN`` → ``zh``, ``nl_NL`` → ``nl``; anything unsupported → ``en``."""
    base = (locale or "en").replace("_", "-").split("-")[0].lower()
    return base if base in SUPPORTED_LOCALES else "en"


@dataclass(frozen=True)
class Rendered:
    locale: str
    subject: str
    text: str
    html: str | None


@lru_cache(maxsize=256)
def _template(path: str) -> Template | None:
    """The template at ``path``, or None: a missing one (say, no HTML part) is looked up once."""
    try:
        return _env.get_template(path)
    except TemplateNotFound:
        return None


def render(name: str, locale: str | None, context: dict[str, Any]) -> Rendered:
    loc = normalize_locale(locale)
    txt = _template(f"{name}/{loc}.txt")
    if txt is None:
        loc, txt = "en", _template(f"{name}/en.txt")
        if txt is None:
            raise TemplateNotFound(f"{name}/en.txt")
    text = txt.render(**context)
    first, _, body = text.partition("\n")
    if not first.startswith("Subject:"):
        raise ValueError(f"template {name}/{loc}.txt must start with 'Subject:'")
    html_part = _template(f"{name}/{loc}.html")
    html = html_part.render(**context) if html_part is not None else None
    return Rendered(loc, first.removeprefix("Subject:").strip(), body.lstrip("\n"), html)
