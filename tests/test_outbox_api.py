"""Code written against the outbox's earlier names and import paths keeps working."""

import importlib
import sqlite3
import sys
import warnings

import pytest

from nexus_otel import outbox as package
from nexus_otel.errors import UsageError
from nexus_otel.outbox import ALL, LocalHandle, Outbox, RowHandle
from nexus_otel.outbox.message import as_handle


@pytest.mark.parametrize("module", ["nexus_otel.exporters.outbox", "nexus_otel.exporters.delivery"])
def test_the_earlier_import_paths_work_and_say_where_to_import_from(module):
    """nexus_otel.exporters.outbox / .delivery give the same objects as nexus_otel.outbox, with a DeprecationWarning."""
    sys.modules.pop(module, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = importlib.import_module(module)
    assert any(w.category is DeprecationWarning and "nexus_otel.outbox" in str(w.message) for w in caught)
    assert old.__all__ and all(getattr(old, name) is getattr(package, name) for name in old.__all__)


def test_the_earlier_names_and_numeric_ids_work_on_an_outbox_and_a_view(tmp_path):
    """put, claim, delivered, dead and Message.id (a number: below 0 in memory, a row id in the table) as before."""
    box = Outbox(tmp_path / "outbox.sqlite")
    view = box.view(ALL)
    assert view.put([("a", "audit", {}), ("b", "audit", {}), ("c", "audit", {})]) == 3
    a, b, c = view.claim(10)
    assert a.id < 0 and as_handle(a.id) == a.handle == LocalHandle(-a.id)
    view.delivered([a.id])
    box.retry(b.id, 0.0, "HTTP 503")
    view.dead(c.id, "HTTP 400")
    (b_row,) = box.claim(10)
    assert b_row.message_id == "b" and b_row.id > 0 and b_row.handle == RowHandle(b_row.id)
    box.delivered([b_row.id])
    (dead,) = box.dead_letters()
    assert (dead.message_id, dead.attempts) == ("c", 1)
    assert box.replay([int(str(dead.handle))]) == 1, "the id `webhooks dead-letters` prints replays it"
    (again,) = box.lease(10)
    box.dead_letter(again.handle, "HTTP 400")
    assert box.replay([box.dead_letters()[0].handle]) == 1, "a handle replays too"
    with sqlite3.connect(box.path) as db:
        assert [r[0] for r in db.execute("SELECT message_id FROM outbox WHERE state = 'pending'")] == ["c"]


@pytest.mark.parametrize("value", [0, "3", 1.5, True, None])
def test_a_value_that_is_not_a_handle_is_refused(value):
    """Anything but a handle or a non-zero whole number is a UsageError naming it, not a silent no-op."""
    with pytest.raises(UsageError, match="not a message handle"):
        as_handle(value)
