"""The fleet page names each model's compliance mode, from its newest version's signed manifest."""

from __future__ import annotations

from datetime import UTC, datetime

from edgeml.central.page import _modes
from edgeml.central.services.fleet import WindowHealth


def _window(model: str, version: int, compliance: str | None) -> WindowHealth:
    now = datetime.now(UTC)
    return WindowHealth(model, version, None, now, now, 10, None, None, None, compliance=compliance)


def test_each_model_shows_its_newest_versions_mode() -> None:
    html = _modes(
        [
            _window("pump", 2, "hipaa"),
            _window("pump", 1, "none"),  # an older version still reporting
            _window("fan", 3, None),  # no manifest for v3: the mode v1 said
            _window("fan", 1, "sox"),
            _window("<b>", 1, "gdpr"),
        ]
    )
    assert html == (
        '<p id="compliance-modes">compliance mode: &lt;b&gt; <strong>gdpr</strong>, '
        "fan <strong>sox</strong>, pump <strong>hipaa</strong></p>"
    )
    assert _modes([_window("pump", 1, None)]) == ""
