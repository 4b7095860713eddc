"""No import cycle between any two modules of `anubis_dagster` (issue 24), imports inside
functions included: a cycle makes import order matter (the `config.integrations` ↔
`integrations.base` pair did) and hides a missing layer. Package-level cycles are the
`acyclic_siblings` contract's job (pyproject.toml, `make lint`)."""

from __future__ import annotations

import grimp


def strongly_connected(graph: grimp.ImportGraph) -> list[list[str]]:
    """The import cycles of the graph: its strongly connected components of two or more
    modules (Tarjan's algorithm, iterative: no recursion limit on a deep import chain)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            module, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append(
                        (child, iter(sorted(graph.find_modules_directly_imported_by(child))))
                    )
                elif child in on_stack:
                    low[module] = min(low[module], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[module])
            if low[module] == index[module]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == module:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def test_no_module_imports_itself_through_others() -> None:
    graph = grimp.build_graph("anubis_dagster")
    cycles = strongly_connected(graph)
    described = [
        " -> ".join(graph.find_shortest_chain(importer=c[0], imported=c[1]) or c) for c in cycles
    ]
    assert cycles == [], f"import cycles: {described}"


def test_the_check_finds_a_cycle() -> None:
    """The checker itself: a graph with a cycle (the one issue 24 found) is reported."""
    graph = grimp.ImportGraph()
    for module in ("pkg.config.integrations", "pkg.integrations.base", "pkg.core"):
        graph.add_module(module)
    graph.add_import(importer="pkg.config.integrations", imported="pkg.integrations.base")
    graph.add_import(importer="pkg.integrations.base", imported="pkg.config.integrations")
    graph.add_import(importer="pkg.integrations.base", imported="pkg.core")
    assert strongly_connected(graph) == [["pkg.config.integrations", "pkg.integrations.base"]]
