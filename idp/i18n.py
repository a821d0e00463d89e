"""The citizen pages' languages and how one is chosen for a request.

Order of precedence (docs/languages.md):
1. the citizen's own choice on the language switch (the `lang` cookie, GET /lang/<code>);
2. `ui_locales` of the authorization request being served (OIDC Core §3.1.2.1): from the query
   of /authorize and of the login steps it sends the citizen to, or from the authorization
   request waiting in the session (a pushed request, a return from the eID service);
3. the browser's Accept-Language (RFC 9110 §12.5.4);
4. German, the city's language.
The switch comes first because it is the only one the citizen chose on this site: a service's
`ui_locales` or a shared computer's browser settings must not undo it.
"""

from __future__ import annotations

import json
from typing import NamedTuple

from flask import g, request
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

DEFAULT = "de"


class Language(NamedTuple):
    code: str
    name: str  # in the language itself (the switch shows every language in its own name)
    rtl: bool = False


LANGUAGES = (
    Language("de", "Deutsch"),
    Language("en", "English"),
    Language("tr", "Türkçe"),
    Language("ar", "العربية", rtl=True),
    Language("uk", "Українська"),
)
LOCALES = tuple(lang.code for lang in LANGUAGES)
RTL = frozenset(lang.code for lang in LANGUAGES if lang.rtl)
MAX_TAGS = 20  # of a ui_locales value; the rest is ignored


def best_of(ui_locales: str | None) -> str | None:
    """The first supported language of a space-separated list of BCP 47 tags in order of
    preference (OIDC Core §3.1.2.1 ui_locales), by primary subtag: "en-GB" -> "en"."""
    if not isinstance(ui_locales, str):
        return None
    for tag in ui_locales.split()[:MAX_TAGS]:
        primary = tag.split("-", 1)[0].lower()
        if primary in LOCALES:
            return primary
    return None


def _pending_ui_locale() -> str | None:
    from idp import browser

    try:
        session = browser.current()
        # reading the row may load it again: after a transaction the database ended (a restart
        # during the request), that raises too
        pending = session.pending if session is not None else None
    except SQLAlchemyError:  # the page saying that the database is briefly away must still render
        return None
    if not pending:
        return None
    ui = json.loads(pending).get("ui")
    return ui if ui in LOCALES else None


def _ui_locales() -> str:
    """OIDC Core §3.1.2.1 ui_locales, from the query or a POSTed form. A body that cannot be read
    (over 1 MiB, a broken encoding) is answered by its error page, whose texts ask for the locale
    again: then the query alone, or reading the body would raise once more (a 500, not the 413)."""
    try:
        return str(request.values.get("ui_locales", ""))
    except (HTTPException, UnicodeDecodeError, ValueError):
        return str(request.args.get("ui_locales", ""))


def select_locale() -> str:
    """Flask-Babel's locale selector (the order is in this module's docstring)."""
    chosen = request.cookies.get("lang")
    if chosen in LOCALES:
        return chosen
    asked = best_of(_ui_locales()) or best_of(g.get("ui_locales"))
    if asked is None:
        asked = _pending_ui_locale()
    if asked is not None:
        return asked
    return request.accept_languages.best_match(LOCALES) or DEFAULT


def direction(code: str) -> str:
    return "rtl" if code in RTL else "ltr"
