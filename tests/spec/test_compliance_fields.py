"""The spec's compliance fields: a wrong minimum count is refused, naming the field."""

from __future__ import annotations

import pytest
import yaml

from edgeml.errors import SpecError
from edgeml.spec.loader import parse_spec
from train.helpers import faults_spec


@pytest.mark.parametrize("value", [1, 0, "ten"])
def test_a_min_bin_count_under_two_or_not_a_number_is_refused_by_name(value: object) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(yaml.safe_dump({**faults_spec("pumps"), "min_bin_count": value}), source="bad.yaml")
    assert [issue.path for issue in info.value.issues] == ["min_bin_count"]


def test_hipaa_defaults_to_ten_and_takes_the_specs_k() -> None:
    assert parse_spec(yaml.safe_dump({**faults_spec("pumps"), "compliance": "hipaa"})).min_bin_count == 10
    spec = parse_spec(yaml.safe_dump({**faults_spec("pumps"), "compliance": "hipaa", "min_bin_count": 25}))
    assert spec.min_bin_count == 25
