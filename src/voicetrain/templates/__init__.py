"""The HTML pages: prepare's report.html, eval's report.html and compare.html.

jinja2 templates beside this module, autoescaped: every value a page shows (a transcript, a
speaker name, a path) is escaped unless a template says otherwise. The pages extend base.html
(one stylesheet, style.css, inlined so a page stays one file) and share _partials.html (audio
players, figures); numbers go through the ``num`` filter.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from voicetrain.fileio import atomic_write_text


def num(v: Any, spec: str = ".2f") -> str:
    """A number as the pages print it: a format spec, or 'pct' for a percentage; '–' if missing or not finite."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{100 * v:.1f}%" if spec == "pct" else format(v, spec)


# StrictUndefined: a misspelt key is an error, not a silently empty cell.
_ENV = Environment(loader=PackageLoader("voicetrain", "templates"), autoescape=select_autoescape(["html"]),
                   undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
_ENV.filters["num"] = num


def render(template: str, **context: Any) -> str:
    """``template`` rendered with ``context`` (the studio serves its page this way)."""
    return _ENV.get_template(template).render(**context)


def write_page(path: Path, template: str, **context: Any) -> Path:
    """Render ``template`` with ``context`` into ``path`` (atomically); returns ``path``."""
    atomic_write_text(path, _ENV.get_template(template).render(**context))
    return path
