"""Numbers as a student reads them: every number the engine writes into a sum or a grid.

Rounding for display is half up on the number's shortest decimal form, the way students
round by hand: 3.125 → 3.13 and 2.675 → 2.68 at two decimals (Python's own formatting
rounds the binary float half to even and writes 3.12 and 2.67).

How the digits are written (decimal point or comma) is the caller's choice: the web app
installs its locale's writer with ``use_writer`` around a page (see ``app/numbers.py``); the
default writes a plain decimal point, for scripts, tests and the JSON API. The engine
itself never imports a locale library.
"""

from __future__ import annotations

import contextvars
import decimal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import ROUND_HALF_UP, Decimal

__all__ = ["MINUS", "fixed", "list_separator", "round_half_up", "scientific", "significant", "use_writer"]

MINUS = "\u2212"
# Enough digits for any value a page shows (|v| < 1e30 with 12 decimals).
_CONTEXT = decimal.Context(prec=60)


def _plain(d: Decimal) -> str:
    return format(d, "f")


Writer = Callable[[Decimal], str]
_writer: contextvars.ContextVar[Writer] = contextvars.ContextVar("cnnlab_number_writer", default=_plain)


@contextmanager
def use_writer(write: Writer) -> Iterator[None]:
    """Inside the block, numbers are written by ``write(d)``, which must show exactly the
    digits of the Decimal ``d`` (its exponent says how many decimals), with ``-`` for minus."""
    token = _writer.set(write)
    try:
        yield
    finally:
        _writer.reset(token)


def round_half_up(v, decimals: int) -> Decimal:
    """``v`` rounded to ``decimals`` places, halves away from zero, from ``repr(v)``."""
    return Decimal(repr(float(v))).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP,
                                            context=_CONTEXT)


def _write(d: Decimal) -> str:
    if d == 0:
        d = abs(d)  # never "−0"
    return _writer.get()(d).replace("-", MINUS)


def fixed(v, decimals: int, *, trim: bool = True) -> str:
    """``v`` with ``decimals`` decimals, rounded half up; ``trim`` drops trailing zeros
    (2.5, not 2.50). U+2212 for minus."""
    d = round_half_up(v, decimals)
    if trim:
        d = d.quantize(Decimal(1), context=_CONTEXT) if d == d.to_integral_value() else d.normalize(_CONTEXT)
    return _write(d)


def significant(v, digits: int) -> str:
    """``v`` with ``digits`` significant digits in fixed notation (0.000123, not 1.23e-4),
    rounded half up, no trailing zeros."""
    v = float(v)
    if v == 0:
        return "0"
    return fixed(v, max(0, digits - 1 - Decimal(repr(v)).adjusted()))


def scientific(v, decimals: int) -> str:
    """``v`` as a mantissa with ``decimals`` decimals (no trailing zeros) times a power of
    ten: ``6.465e−5``."""
    d = Decimal(repr(float(v)))
    exponent = d.adjusted()
    mantissa = round_half_up(d.scaleb(-exponent, _CONTEXT), decimals)
    if abs(mantissa) >= 10:  # 9.9996 rounds up to 10.000: one more power of ten
        exponent += 1
        mantissa = round_half_up(mantissa.scaleb(-1, _CONTEXT), decimals)
    return f"{fixed(mantissa, decimals)}e{exponent}".replace("-", MINUS)


def list_separator(values) -> str:
    """Between the numbers ``values`` in a list: ", " — or "; " where the decimal mark is itself
    a comma and one of them has decimals (max(0,5; 1,2), not max(0,5, 1,2); max(1, 3) stays)."""
    if all(float(v).is_integer() for v in values):
        return ", "
    return "; " if "," in _writer.get()(Decimal("0.5")) else ", "
