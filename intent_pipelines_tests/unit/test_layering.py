"""Package layering: a package below another never imports it, read from the import statements alone."""

import ast
from pathlib import Path

import pytest

import intent_pipelines

PACKAGE = Path(intent_pipelines.__file__).parent
# (package, package it must not import), under intent_pipelines. The store may use the audit record
# format; the audit code reaches the store only through audit.chain_store.ChainStore.
FORBIDDEN = [
    ("audit", "store"),
    ("platforms", "actions"),
    ("execution", "actions"),
    ("execution", "platforms"),
    ("execution", "lifecycle"),
]


def module_name(path: Path) -> tuple[str, str]:
    """(the module a file is, the package its relative imports start from)."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if path.name == "__init__.py":
        module = module.removesuffix(".__init__")
        return module, module
    return module, module.rpartition(".")[0]


def imported_modules(source: str, package: str) -> set[str]:
    """Every module ``source`` imports (relative ones resolved, ``from a import b`` as a and a.b), anywhere in it."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


@pytest.mark.parametrize(("lower", "upper"), FORBIDDEN, ids=[f"{a}-imports-{b}" for a, b in FORBIDDEN])
def test_lower_package_does_not_import_upper(lower: str, upper: str) -> None:
    """No module of ``lower`` imports ``upper`` (not even under TYPE_CHECKING or inside a function)."""
    files = sorted((PACKAGE / lower).rglob("*.py"))
    assert files, f"no package intent_pipelines.{lower}"
    offending = {f"{path.relative_to(PACKAGE.parent)} imports {name}"
                 for path in files for name in imported_modules(path.read_text(), module_name(path)[1])
                 if _within(name, f"intent_pipelines.{upper}")}
    assert not offending, sorted(offending)


def test_the_import_reader_sees_every_form() -> None:
    """Absolute, from-, package-level and relative imports (in functions too) are read as the modules they name."""
    source = ("import intent_pipelines.store.state\nfrom intent_pipelines import store\n"
              "from ..store import schema\n\ndef f():\n    from .record import AuditRecord\n")
    found = imported_modules(source, "intent_pipelines.audit")
    assert module_name(PACKAGE / "audit" / "verify.py") == ("intent_pipelines.audit.verify", "intent_pipelines.audit")
    assert {"intent_pipelines.store.state", "intent_pipelines.store", "intent_pipelines.store.schema",
            "intent_pipelines.audit.record"} <= found
