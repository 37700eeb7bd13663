"""The import graph of ``edgeml``: no circles, and the layers the architecture names point one way.

Read by grimp from the source (nothing is imported); imports under ``TYPE_CHECKING`` count too,
since a circle of them is still a circle to a reader.
"""

from __future__ import annotations

import grimp
import pytest

#: circles still open, each to be broken by the change that owns it (then struck from here)
KNOWN_CIRCLES: list[set[str]] = []

#: the central node, top to bottom: a layer imports only the layers below it (and itself)
CENTRAL_LAYERS = [
    grimp.Layer("app", "run", independent=False),
    grimp.Layer("intake", "routes", "page", independent=False),
    grimp.Layer("services", "retrain", independent=False),
    grimp.Layer("alerts", "drift", "gate", "monitor", "performance", independent=False),
    grimp.Layer("config"),
]


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("edgeml", cache_dir=None)


def _circles(graph: grimp.ImportGraph) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(component)

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_edgeml_has_no_import_circles_but_the_known_ones(graph: grimp.ImportGraph) -> None:
    circles = _circles(graph)
    assert [c for c in circles if c not in KNOWN_CIRCLES] == []
    assert [c for c in KNOWN_CIRCLES if c not in circles] == []  # broken at last: strike it above


def test_the_central_node_is_layered(graph: grimp.ImportGraph) -> None:
    illegal = graph.find_illegal_dependencies_for_layers(layers=CENTRAL_LAYERS, containers={"edgeml.central"})
    assert {(d.importer, d.imported) for d in illegal} == set()


@pytest.mark.parametrize(
    ("importer", "imported"),
    [
        ("edgeml.agent", "edgeml.central"),  # a device installs the agent alone
        ("edgeml.telemetry", "edgeml.central"),  # storage knows no analysis, services or routes
        ("edgeml.telemetry", "edgeml.agent"),  # the wire contract is the agent's and the node's
    ],
)
def test_a_lower_part_imports_nothing_of_a_higher_one(
    graph: grimp.ImportGraph, importer: str, imported: str
) -> None:
    chain = graph.find_shortest_chain(importer=importer, imported=imported, as_packages=True)
    assert chain is None, " -> ".join(chain or ())
