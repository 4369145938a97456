"""Keyset (cursor) pagination: a page is the rows after (or before) a row already shown, in
an ordering that ends with a unique tiebreaker, so the last page costs what the first one
does: no OFFSET to walk, no COUNT over the table.

An ordering is a list of model field paths or annotation names, each optionally prefixed
with `-`, ending with `pk` (or another unique field), e.g. ["-created_at", "-pk"]. Its
values must not be null (coalesce a nullable column into an annotation first).
The cursor names the direction and the sort values of the row it starts from; a cursor
that does not parse (hand-edited, or from an ordering since changed) gives the first page.
"""

import base64
import json
from dataclasses import dataclass
from datetime import date, datetime, time

from django.core.exceptions import ValidationError
from django.db.models import Q

AFTER, BEFORE = "a", "b"


@dataclass
class Page:
    rows: list
    next_cursor: str | None  # the page after this one, None on the last
    previous_cursor: str | None  # the page before this one, None on the first

    @property
    def has_other_pages(self) -> bool:
        return bool(self.next_cursor or self.previous_cursor)


def paginate(queryset, ordering: list[str], cursor: str | None, size: int) -> Page:
    """One page of `queryset` in `ordering`: `size` rows after/before the cursor's row (the
    first page without one), in one query of at most `size + 1` rows."""
    keys = [(name.lstrip("-"), name.startswith("-")) for name in ordering]
    direction, values = _decode(cursor, queryset, keys)
    if direction is None:
        rows = list(queryset.order_by(*ordering)[: size + 1])
        more, rows = len(rows) > size, rows[:size]
        return Page(rows, _encode(AFTER, rows[-1], keys) if more else None, None)
    backwards = direction == BEFORE
    seek = _beyond(keys, values, backwards)
    order = [("-" if desc != backwards else "") + field for field, desc in keys]
    rows = list(queryset.filter(seek).order_by(*order)[: size + 1])
    more, rows = len(rows) > size, rows[:size]
    if backwards:
        rows.reverse()
        previous = _encode(BEFORE, rows[0], keys) if more and rows else None
        following = _encode(AFTER, rows[-1], keys) if rows else None
        return Page(rows, following, previous)
    following = _encode(AFTER, rows[-1], keys) if more else None
    previous = _encode(BEFORE, rows[0], keys) if rows else None
    return Page(rows, following, previous)


def after_row(ordering: list[str], row) -> Q:
    """The condition for rows that come after `row` in `ordering` (for a caller that names
    the last row it saw instead of a cursor)."""
    keys = [(name.lstrip("-"), name.startswith("-")) for name in ordering]
    return _beyond(keys, [_value(row, field) for field, _ in keys], backwards=False)


def _beyond(keys, values, backwards: bool) -> Q:
    """Rows strictly past `values` in the ordering (before them when `backwards`).

    The expanded form (a > x) OR (a = x AND b > y) ... is led by a bound on the first key
    alone (a >= x), which an index on the ordering's columns can seek to; the rest only
    sorts out the ties.
    """
    first, first_desc = keys[0]
    down = first_desc != backwards
    condition = Q(**{f"{first}__{'lte' if down else 'gte'}": values[0]})
    past = Q()
    equal = Q()
    for (field, desc), value in zip(keys, values, strict=True):
        lookup = "lt" if desc != backwards else "gt"
        past |= equal & Q(**{f"{field}__{lookup}": value})
        equal &= Q(**{field: value})
    return condition & past


def _value(row, field: str):
    for part in field.split("__"):
        row = getattr(row, part)
    return row


def _encode(direction: str, row, keys) -> str:
    values = [_value(row, field) for field, _ in keys]
    raw = json.dumps([direction, values], default=_exact, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _exact(value):
    """Dates and times to the microsecond (DjangoJSONEncoder would cut them to milliseconds,
    and a cursor must name its row's values exactly)."""
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    raise TypeError(f"a cursor cannot hold {type(value).__name__}")


def _decode(cursor: str | None, queryset, keys):
    if not cursor:
        return None, None
    try:
        direction, raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if direction not in (AFTER, BEFORE) or not isinstance(raw, list) or len(raw) != len(keys):
            return None, None
        values = [_field(queryset, field).to_python(value) for (field, _), value in zip(keys, raw, strict=True)]
    except (ValueError, TypeError, ValidationError):
        return None, None
    if any(value is None for value in values):
        return None, None
    return direction, values


def _field(queryset, path: str):
    """The field a path like `host__name`, `pk` or an annotation's name ends at."""
    if path in queryset.query.annotations:
        return queryset.query.annotations[path].output_field
    model = queryset.model
    *relations, last = path.split("__")
    for name in relations:
        model = model._meta.get_field(name).related_model
    return model._meta.pk if last == "pk" else model._meta.get_field(last)
