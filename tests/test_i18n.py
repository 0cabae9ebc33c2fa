"""Translation catalogs: every marked string has Spanish, and the locale rules hold."""

from __future__ import annotations

from pathlib import Path

import pytest
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

from cnnlab.app import i18n

ROOT = Path(__file__).resolve().parent.parent
KEYWORDS = {**DEFAULT_KEYWORDS, "N_": None}


def extracted_msgids(root: Path) -> dict[str, str]:
    """Every msgid marked under ``root`` (app/ and templates/, as ``pybabel extract`` sees them)."""
    with (ROOT / "babel.cfg").open() as fh:
        method_map, options_map = parse_mapping_cfg(fh)
    found: dict[str, str] = {}
    for filename, lineno, message, _comments, _context in extract_from_dir(
        str(root), method_map, options_map, keywords=KEYWORDS
    ):
        msgid = message[0] if isinstance(message, tuple) else message
        if msgid:
            found.setdefault(msgid, f"{filename}:{lineno}")
    return found


def untranslated(msgids: dict[str, str], locale: str = "es") -> list[str]:
    with i18n.po_path(locale).open("rb") as fh:
        catalog = read_po(fh, locale=locale)
    problems = []
    for msgid, where in sorted(msgids.items()):
        entry = catalog.get(msgid)
        if entry is None:
            problems.append(f"{where}: {msgid!r} is not in the {locale} catalog (run scripts/i18n.sh)")
        elif entry.fuzzy:
            problems.append(f"{where}: {msgid!r} is marked fuzzy in the {locale} catalog")
        elif not (entry.string if isinstance(entry.string, str) else all(entry.string)):
            problems.append(f"{where}: {msgid!r} has no {locale} translation")
    return problems


def test_extraction_finds_the_template_and_python_strings():
    msgids = extracted_msgids(ROOT)
    assert "Projector mode" in msgids  # base.html, {{ _() }}
    assert any(m.startswith("Follow the tutorial session") for m in msgids)  # index.html, {% trans %}
    assert "Pooling" in msgids  # app/lesson.py, N_()
    assert "Must be at least %(ge)s." in msgids  # app/errors.py


def test_every_marked_string_has_a_spanish_translation():
    problems = untranslated(extracted_msgids(ROOT))
    assert not problems, "\n".join(problems)


def test_the_check_catches_an_untranslated_template_string(tmp_path):
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "probe.html").write_text('<p>{{ _("A sentence nobody translated") }}</p>\n')
    problems = untranslated(extracted_msgids(tmp_path))
    assert len(problems) == 1
    assert "A sentence nobody translated" in problems[0]


@pytest.mark.parametrize("locale", i18n.LOCALES)
def test_catalogs_parse_and_placeholders_match(locale):
    with i18n.po_path(locale).open("rb") as fh:
        catalog = read_po(fh, locale=locale)
    errors = [(message.id, [str(e) for e in errs]) for message, errs in catalog.check()]
    assert errors == []


def test_python_strings_follow_the_current_locale():
    with i18n.use_locale("es"):
        assert i18n.gettext("Page not found") == "Página no encontrada"
        with i18n.use_locale("en"):
            assert i18n.gettext("Page not found") == "Page not found"
        assert i18n.get_locale() == "es"


@pytest.mark.parametrize(
    ("query", "cookie", "expected"),
    [
        ("en", None, ("en", True)),
        ("es", "en", ("es", True)),
        (None, "en", ("en", False)),
        ("fr", "en", ("en", False)),
        (None, None, ("es", False)),
        (None, "de", ("es", False)),
    ],
)
def test_negotiate_locale_prefers_query_then_cookie_then_default(query, cookie, expected):
    assert i18n.negotiate_locale(query, cookie, "es") == expected


def test_unsupported_locale_is_refused():
    with pytest.raises(ValueError, match="unsupported locale"):
        i18n.get_translations("fr")
