"""Small helpers over pikepdf objects, safe on hostile structure (cycles, sharing).

pikepdf is imported inside each function: this module may be imported before the
resource limits are set without loading a parser.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any


def name_of(value: Any) -> str | None:
    import pikepdf

    return str(value) if isinstance(value, pikepdf.Name) else None


def is_dictlike(value: Any) -> bool:
    import pikepdf

    return isinstance(value, pikepdf.Dictionary | pikepdf.Stream)


def kids(node: Any) -> list[Any]:
    import pikepdf

    kids = node.get("/Kids")
    return list(kids) if isinstance(kids, pikepdf.Array) else []


def unique_dicts(start: list[Any], children: Callable[[Any], list[Any]], *,
                  limit: int | None = None) -> Iterator[Any]:
    """Every dictionary reachable from `start` once, arrays flattened: hostile files
    share objects and build cycles. `children` is asked after the caller has seen
    the node. Stops after `limit` distinct indirect objects."""
    import pikepdf

    seen: set[tuple[int, int]] = set()
    todo = list(start)
    while todo and (limit is None or len(seen) < limit):
        item = todo.pop()
        if isinstance(item, pikepdf.Array | list):
            todo.extend(item)
            continue
        if not is_dictlike(item):
            continue
        if item.is_indirect:
            if item.objgen in seen:
                continue
            seen.add(item.objgen)
        yield item
        todo.extend(children(item))
