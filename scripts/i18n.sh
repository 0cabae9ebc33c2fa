#!/usr/bin/env bash
# Refresh the translation catalogs after marking new strings with _() / {% trans %} / N_().
# Then fill in the empty msgstr entries of app/locale/es/LC_MESSAGES/messages.po (and clear
# any "#, fuzzy" flag after checking the guess): tests/test_i18n.py fails until every
# message has a Spanish translation. No compile step: the app reads the .po files directly.
set -euo pipefail
cd "$(dirname "$0")/.."
pybabel extract -F babel.cfg -k N_ --no-location --sort-output \
  --project="CNN Lab" --copyright-holder="CNN Lab authors" \
  -o app/locale/messages.pot .
pybabel update -i app/locale/messages.pot -d app/locale -D messages --ignore-obsolete --width=100
