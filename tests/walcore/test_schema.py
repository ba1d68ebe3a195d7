"""The seed's SchemaBuilder rules."""

from __future__ import annotations

import math

import pytest

from walcore.schema import SchemaBuilder, SchemaError
from walcore.storage.signals import NANOS, lambda_per_ns


def test_valid_schema_sorts_and_dedups_windows_and_computes_lambda() -> None:
    schema = SchemaBuilder().signal("view", 1, 3600, [86400, 3600, 3600]).build()
    view = schema.by_name["view"]
    assert view.windows_seconds == (3600, 86400)
    assert math.isclose(lambda_per_ns(view.half_life_seconds) * NANOS, math.log(2) / 3600)
    assert schema.ids == {"view": 1}


@pytest.mark.parametrize(
    "calls,message",
    [
        ([("view", 1, 60, [1]), ("view", 2, 60, [1])], "duplicate name"),
        ([("view", 1, 60, [1]), ("click", 1, 60, [1])], "duplicate id"),
        ([("View-1", 1, 60, [1])], "identifier"),
        ([("view", 1, 0, [1])], "half_life_seconds"),
        ([("view", 1, -5, [1])], "half_life_seconds"),
        ([("view", 1, 60, [])], "windows_seconds must not be empty"),
        ([("view", 70000, 60, [1])], "id must be"),
    ],
)
def test_builder_rejects(calls: list[tuple], message: str) -> None:
    builder = SchemaBuilder()
    with pytest.raises(SchemaError, match=message):
        for call in calls:
            builder.signal(*call)
