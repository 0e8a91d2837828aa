"""The package's layers hold: the core imports no Dagster, the public API is Dagster-free,
modules import no cycle and no other module's private names, the environment is read in one
place, SQL lives in the named SQL files, and the asset graph is what users know."""

from __future__ import annotations

import ast
import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import fes_assets.core
from fes_assets.core.registry import load_registry
from fes_assets.core.settings import SensorSettings
from fes_assets.orchestration.factory import build_definitions
from fes_assets_tests.graph_snapshot import describe_graph

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "fes_assets"
SNAPSHOT = Path(__file__).parent / "snapshots" / "asset_graph.json"


def _fresh_python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _core_modules() -> list[str]:
    return sorted(
        m.name for m in pkgutil.walk_packages(fes_assets.core.__path__, "fes_assets.core.")
    )


def test_the_core_imports_no_dagster():
    modules = _core_modules()
    assert "fes_assets.core.indexing" in modules and "fes_assets.core.storage.latest" in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m == 'dagster' or m.startswith('dagster.')))\n"
    )
    assert _fresh_python(code) == "[]"


def test_the_public_api_imports_no_dagster():
    code = (
        "import sys\n"
        "import fes_assets\n"
        "from fes_assets import entity_df, EntityQuery, FesError, QueryError, load_registry\n"
        "assert issubclass(QueryError, FesError)\n"
        "assert 'entity_df' in dir(fes_assets)\n"
        "print('dagster' in sys.modules)\n"
    )
    assert _fresh_python(code) == "False"


def test_the_asset_graph_is_unchanged_and_needs_no_database():
    """The snapshot was taken from the release before the package was layered; regenerate
    it deliberately (FES_UPDATE_SNAPSHOT=1) when the graph is meant to change."""
    defs = build_definitions(load_registry(ROOT / "fes.yaml"), sensor=SensorSettings())
    graph = describe_graph(defs)
    if os.environ.get("FES_UPDATE_SNAPSHOT") == "1":
        SNAPSHOT.write_text(json.dumps(graph, indent=2, sort_keys=True) + "\n")
    assert graph == json.loads(SNAPSHOT.read_text())


# --- static structure ---------------------------------------------------------------------


def _modules() -> dict[str, ast.Module]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = ast.parse(path.read_text(), str(path))
    return found


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _imports(modules: dict[str, ast.Module]) -> dict[str, list[tuple[str, str, bool]]]:
    """module -> (imported module, imported name or '', at module level)."""
    out: dict[str, list[tuple[str, str, bool]]] = {}
    for name, tree in modules.items():
        is_package = (PACKAGE.parent / name.replace(".", "/") / "__init__.py").exists()
        top_level = {id(n) for n in tree.body}
        guarded = {
            id(inner)
            for n in tree.body
            if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test)
            for inner in ast.walk(n)
        }
        found = []
        for node in ast.walk(tree):
            if id(node) in guarded:
                continue
            if isinstance(node, ast.ImportFrom):
                target = _resolve(name, node, is_package)
                for alias in node.names:
                    found.append((target, alias.name, id(node) in top_level))
            elif isinstance(node, ast.Import):
                found.extend((alias.name, "", id(node) in top_level) for alias in node.names)
        out[name] = found
    return out


def test_modules_import_no_cycle():
    modules = _modules()
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for name, imports in _imports(modules).items():
        for target, imported, top_level in imports:
            if not top_level:
                continue  # imported when called: no cycle at import time
            submodule = f"{target}.{imported}"
            dest = submodule if submodule in modules else target
            if dest in modules and dest != name:
                edges[name].add(dest)
    seen: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        seen[node] = 1
        for nxt in sorted(edges[node]):
            if seen.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path, node, nxt]))
            if nxt not in seen:
                visit(nxt, [*path, node])
        seen[node] = 2

    for module in sorted(modules):
        if module not in seen:
            visit(module, [])


def test_no_private_names_cross_modules():
    modules = _modules()
    leaks = [
        f"{name} imports {imported} from {target}"
        for name, imports in _imports(modules).items()
        for target, imported, _ in imports
        if target.startswith("fes_assets") and imported.startswith("_") and target != name
    ]
    for name, tree in modules.items():
        for node in ast.walk(tree):
            # `other._name` where `other` is not self/cls: reaching into another object.
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and isinstance(node.value, ast.Attribute | ast.Name)
                and ast.unparse(node.value) not in ("self", "cls")
            ):
                leaks.append(f"{name}: {ast.unparse(node)}")
    assert not leaks


def test_the_environment_is_read_in_one_module():
    readers = sorted(
        name
        for name, tree in _modules().items()
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and ast.unparse(node) in ("os.environ", "os.getenv", "os.putenv")
    )
    assert set(readers) == {"fes_assets.core.settings"}


def test_sql_statements_live_in_the_sql_files():
    keywords = ("SELECT ", "INSERT ", "UPDATE ", "DELETE ", "CREATE ", "DROP ", "ALTER ", "SET ")
    inline = [
        f"{name}:{node.lineno}: {node.value[:40]!r}"
        for name, tree in _modules().items()
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value.lstrip().startswith(keywords)
    ]
    assert not inline


def test_every_public_name_resolves_and_none_imports_feast():
    code = (
        "import sys\n"
        "import fes_assets\n"
        "names = dir(fes_assets)\n"
        "assert 'EntityIndexComponent' in names and 'build_definitions' in names\n"
        "for name in names:\n"
        "    getattr(fes_assets, name)\n"
        "print(any(m == 'feast' or m.startswith('feast.') for m in sys.modules))\n"
    )
    assert _fresh_python(code) == "False"


def test_a_component_attribute_wins_over_its_variable(monkeypatch):
    from fes_assets import EntityIndexComponent

    monkeypatch.setenv("FES_SENSOR_INTERVAL_SECONDS", "45")
    monkeypatch.setenv("FES_RECONCILE_INTERVAL_SECONDS", "90")
    chosen = EntityIndexComponent(sensor_interval_seconds=5, sensor_running=True)
    settings = chosen.sensor_settings()
    assert (settings.interval, settings.running, settings.reconcile_interval) == (5, True, 90.0)
    monkeypatch.setenv("FES_SQS_QUEUE_URL", "https://sqs.eu-west-1.amazonaws.com/1/from-env")
    monkeypatch.setenv("FES_MAX_LAG_SECONDS", "900")
    queue = "https://sqs.eu-west-1.amazonaws.com/1/chosen"
    settings = EntityIndexComponent(sqs_queue_url=queue, max_lag_seconds=120).sensor_settings()
    assert (settings.sqs_queue_url, settings.max_lag) == (queue, 120)
    assert EntityIndexComponent().sensor_settings().max_lag == 900
