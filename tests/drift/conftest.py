"""NannyML's bundled data sets, loaded once per session (no download: they ship with the package)."""

from __future__ import annotations

import warnings
from functools import cache

import pandas as pd

from agent.conftest import publisher  # noqa: F401 (a fixture: a signing publisher on a local store)
from edgeml._thirdparty import import_nannyml

nml = import_nannyml()

#: per data set: its loader, the model inputs, and the chunk size the comparison uses
DATASETS: dict[str, tuple[str, list[str], int]] = {
    "california": (
        "load_modified_california_housing_dataset",
        ["MedInc", "HouseAge", "AveRooms", "AveBedrms", "Population", "AveOccup", "Latitude", "Longitude"],
        1000,
    ),
    "binary": (
        "load_synthetic_binary_classification_dataset",
        [
            "distance_from_office",
            "salary_range",
            "gas_price_per_litre",
            "public_transportation_cost",
            "wfh_prev_workday",
            "workday",
            "tenure",
        ],
        5000,
    ),
    "multiclass": (
        "load_synthetic_multiclass_classification_dataset",
        [
            "acq_channel",
            "app_behavioral_score",
            "requested_credit_limit",
            "app_channel",
            "credit_bureau_score",
            "stated_income",
            "is_customer",
        ],
        5000,
    ),
    "car_loan": (
        "load_synthetic_car_loan_dataset",
        [
            "car_value",
            "salary_range",
            "debt_to_income_ratio",
            "loan_length",
            "repaid_loan_on_prev_car",
            "size_of_downpayment",
            "driver_tenure",
        ],
        5000,
    ),
}


@cache
def dataset(name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(reference, analysis) of one of NannyML's data sets."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "path is deprecated", DeprecationWarning)
        reference, analysis, _ = getattr(nml, DATASETS[name][0])()
    return reference, analysis
