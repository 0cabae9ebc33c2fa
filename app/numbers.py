"""Numbers in the page's language: 93,6 % and 0,7843 in Spanish, 93.6% and 0.7843 in English.

One way for every number a student reads. The engine writes its sums and grids through
``core.numfmt`` (rounded half up: 3.125 → 3.13); ``use_numbers(locale)`` makes it write them
with Babel in that locale, and the Jinja filters below (``num``, ``pct``, ``count``) use the
same rounding and the same locale. ``i18n.LocaleMiddleware`` and ``i18n.use_locale`` call
``use_numbers``; the JSON API stays with a decimal point (``use_numbers(None)``), its numbers
being plain JSON numbers anyway.

What a person types (form fields, URL values) is not formatted here: inputs keep the value
as typed, and the parsers accept a decimal comma.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from functools import lru_cache

from babel import Locale
from babel.numbers import format_decimal, format_percent, parse_pattern
from jinja2 import pass_context

from cnnlab.core import numfmt

_locale: contextvars.ContextVar[str | None] = contextvars.ContextVar("cnnlab_number_locale", default=None)
PLAIN = "en"  # the API's numbers: a decimal point, no grouping


@lru_cache(maxsize=None)
def _writer(locale: str) -> numfmt.Writer:
    def write(d: Decimal) -> str:
        decimals = max(0, -d.as_tuple().exponent)  # type: ignore[operator]
        return format_decimal(d, format="0." + "0" * decimals if decimals else "0", locale=locale)
    return write


@contextmanager
def use_numbers(locale: str | None) -> Iterator[None]:
    """Numbers inside the block are written as ``locale`` writes them (None: a plain decimal point)."""
    token = _locale.set(locale)
    try:
        if locale is None:
            yield
        else:
            with numfmt.use_writer(_writer(locale)):
                yield
    finally:
        _locale.reset(token)


def num(v, decimals: int = 2, trim: bool = True) -> str:
    """Jinja ``{{ x|num(3) }}``: ``v`` with ``decimals`` decimals (``trim``: no trailing zeros),
    rounded half up, in the page's language; integers stay integers."""
    return numfmt.fixed(v, decimals, trim=trim)


@lru_cache(maxsize=None)
def _percent_pattern(locale: str, decimals: int):
    pattern = parse_pattern(Locale.parse(locale).percent_formats[None].pattern)
    pattern.frac_prec = (decimals, decimals)
    return pattern


def pct(v, decimals: int = 1) -> str:
    """Jinja ``{{ 0.936|pct }}``: a share as a percentage in the page's language, ``93,6 %``
    (es) or ``93.6%`` (en); rounded half up."""
    locale = _locale.get() or PLAIN
    rounded = numfmt.round_half_up(v, decimals + 2)
    return format_percent(rounded, format=_percent_pattern(locale, decimals), locale=locale).replace("-", numfmt.MINUS)


def count(n) -> str:
    """Jinja ``{{ n|count }}``: a whole count with the page's grouping, ``2 730`` style
    (a narrow no-break space, SI style: neither 2,730 nor 2.730 misleads in either language)."""
    return f"{int(numfmt.round_half_up(n, 0)):,}".replace(",", "\u202f").replace("-", numfmt.MINUS)


def _at_render_time(f):
    """``f`` as a Jinja filter that runs when the page is rendered: the language is known only
    then, and Jinja would otherwise work out ``{{ 3.125|num }}`` once, when it compiles the
    template (only filters that take the context are never folded into constants)."""
    @pass_context
    def filter_(_context, *args, **kwargs):
        return f(*args, **kwargs)
    return filter_


FILTERS = {name: _at_render_time(f) for name, f in {"num": num, "pct": pct, "count": count}.items()}
