"""Ids in URLs and filters: a database id is a positive 32-bit integer (the tables'
ids are INTEGER, int4 on PostgreSQL, which refuses to compare with a larger number);
anything else (negative, >= 2^31, not a number) is 404, never a database error."""

from __future__ import annotations

from typing import Any

from flask import request
from werkzeug.routing import IntegerConverter, Map

from signflow.core.errors import NotFound
from signflow.core.i18n import N_

MAX_ID = 2**31 - 1


class IdConverter(IntegerConverter):
    """`<int:...>` everywhere: unsigned and at most 2^31 - 1, so that no route
    matches (404) for an id no table can hold."""

    def __init__(self, url_map: Map, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max", MAX_ID)
        super().__init__(url_map, *args, **kwargs)


def id_arg(name: str) -> int | None:
    """An id filter from the query string: absent or empty is None; present but not
    an id is 404 (like the same id in a path)."""
    raw = request.args.get(name, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) > MAX_ID:
        raise NotFound(N_("No such id."))
    return int(raw)
