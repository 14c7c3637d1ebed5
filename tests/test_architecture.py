"""The house rules of the package layout, read from the imports themselves (ast).

The folder tree is the architecture (docs/DESIGN.md): each part may use only what is below
it. These tests fail the moment a module imports across a line it must not cross, however
deep in a function the import hides.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "relay"
HTTP = ("starlette", "uvicorn", "httpx", "fastapi", "h11", "httptools")
STORAGE = ("sqlite3", "redis", "relay.store")

# (the part, what it must not import, why)
RULES: list[tuple[str, tuple[str, ...], str]] = [
    ("relay.rules", HTTP + STORAGE + ("relay.routes", "relay.delivery", "relay.intake"),
     "the contract's rules are pure functions"),
    ("relay.enrich", HTTP + STORAGE + ("relay.routes", "relay.delivery"),
     "enrichment is pure: what the relay adds to an event"),
    ("relay.settings", HTTP + STORAGE + ("relay.routes", "relay.delivery", "relay.intake"),
     "settings are data, read once"),
    ("relay.intake", HTTP + ("relay.routes", "relay.delivery"),
     "the intake knows no HTTP: the routes translate"),
    ("relay.store", ("relay.routes", "relay.intake", "relay.delivery", "relay.app",
                     "relay.wiring") + HTTP,
     "storage serves every part and depends on none of them"),
    ("relay.limits", ("relay.routes", "relay.intake", "relay.delivery", "relay.store")
     + HTTP, "a rate limiter stands alone"),
    ("relay.delivery", ("relay.routes", "relay.intake", "relay.app", "relay.wiring",
                        "starlette", "uvicorn"),
     "delivery and the routes do not know each other"),
    ("relay.routes", ("relay.delivery", "relay.store.sqlite", "relay.store.redis", "sqlite3",
                      "redis"),
     "routes reach storage and delivery only through the parts the wiring made"),
    ("relay.observe", HTTP + ("relay.routes", "relay.intake", "relay.wiring"),
     "observing is not serving"),
    ("relay.auth", HTTP + STORAGE + ("relay.routes",), "keys and tokens are pure"),
]


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, root: Path = ROOT) -> Iterator[tuple[int, str]]:
    """Every module `path` imports, with its line: top level, in functions, under
    TYPE_CHECKING alike (a type-only import still ties the parts together)."""
    tree = ast.parse(path.read_text("utf-8"), str(path))
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # a relative import, resolved against this module's package
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            yield node.lineno, base
            for alias in node.names:  # `from relay import store` imports relay.store
                yield node.lineno, f"{base}.{alias.name}"


def inside(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations(part: str, forbidden: tuple[str, ...], root: Path = ROOT) -> list[str]:
    """Each import of a module of `part` (under `root`) that names a forbidden module."""
    found = []
    for path in sorted((root / "relay").rglob("*.py")):
        if not inside(module_name(path, root), part):
            continue
        for line, name in imports(path, root):
            for bad in forbidden:
                if inside(name, bad) and not inside(name, part):
                    found.append(f"{path.relative_to(root)}:{line} imports {name}")
    return found


@pytest.mark.parametrize(("part", "forbidden", "why"), RULES, ids=[r[0] for r in RULES])
def test_each_part_imports_only_what_it_may(part: str, forbidden: tuple[str, ...], why: str) -> None:
    where = PACKAGE / part.removeprefix("relay.").replace(".", "/")
    assert where.is_dir() or where.with_suffix(".py").is_file(), f"{part} is gone: update RULES"
    found = violations(part, forbidden)
    assert not found, f"{part}: {why}, but\n  " + "\n  ".join(found)


def test_the_rules_catch_a_forbidden_import(tmp_path: Path) -> None:
    """The checker itself: an import hidden in a function, and a relative one, are seen."""
    rules = tmp_path / "relay" / "rules"
    rules.mkdir(parents=True)
    (rules / "__init__.py").write_text("from relay.rules.fields import FIELDS\n")
    (rules / "probe.py").write_text(
        "def f():\n    from ..store import base\n    import starlette.requests\n"
    )
    found = violations("relay.rules", HTTP + STORAGE, root=tmp_path)
    assert any("imports relay.store" in f for f in found)
    assert any("imports starlette.requests" in f for f in found)


def test_every_package_is_shipped() -> None:
    """pyproject.toml lists its packages by hand (relay.static lives in static/): each
    package folder of relay/ must be in the list, or an installed relay would miss it."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {module_name(init) for init in PACKAGE.rglob("__init__.py")}
    assert found - listed == set(), f"packages missing from pyproject.toml: {sorted(found - listed)}"


def test_no_module_is_long_without_saying_why() -> None:
    """A module over 400 lines does several jobs, unless its docstring says why it is one."""
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text("utf-8")
        if text.count("\n") > 400 and "is one module because" not in (ast.get_docstring(ast.parse(text)) or ""):
            long.append(f"{path.relative_to(ROOT)}: {text.count(chr(10))} lines")
    assert not long, "\n".join(long)
