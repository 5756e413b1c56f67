"""The direction of dependencies (DESIGN.md section 2), checked by reading imports with `ast`.

* `storage/` imports neither `bot`, `cards` nor the Bot Framework SDK.
* `cards/` imports neither `bot` nor the Bot Framework SDK.
* In `bot/`, only the files in `BOTBUILDER_ALLOWED` may import the Bot Framework SDK, so that moving to the
  Microsoft 365 Agents SDK touches few files.

Every import counts: top level, inside functions, under `if TYPE_CHECKING:`, relative ones (resolved), and
`importlib.import_module("...")` / `__import__("...")` with a literal name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: The Bot Framework SDK's top-level packages (botbuilder-*, botframework-connector, botframework-streaming).
BOT_FRAMEWORK = frozenset({"botbuilder", "botframework"})

#: Files under bot/ (paths relative to the repository root) allowed to import the Bot Framework SDK. Keep this
#: short: app wiring, the adapter, the activity handler and the notifier are the expected members, e.g.
#: "bot/app.py", "bot/adapter.py", "bot/handler.py", "bot/notifier.py".
BOTBUILDER_ALLOWED: frozenset[str] = frozenset({"bot/adapter.py", "bot/endpoint.py", "bot/handler.py",
                                                 "bot/activity_json.py"})

FORBIDDEN = {
    "storage": frozenset({"bot", "cards"}) | BOT_FRAMEWORK,
    "cards": frozenset({"bot"}) | BOT_FRAMEWORK,
}


def python_files(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts)


def imported_modules(path: Path, root: Path = ROOT) -> set[str]:
    """Absolute names of every module `path` imports (relative imports resolved against its package, which is
    its directory relative to `root`, for a module and for an `__init__.py` alike)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = list(path.relative_to(root).parts[:-1])
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: max(len(package) - (node.level - 1), 0)]
                if node.module:
                    base = base + node.module.split(".")
                if base:
                    names.add(".".join(base))
                if not node.module:  # `from . import x`: x is a module or a name in the package; count both
                    names.update(".".join([*base, alias.name]) for alias in node.names)
            elif node.module:
                names.add(node.module)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if called in ("import_module", "__import__"):
                names.add(node.args[0].value)
    return names


def top_level(names: set[str]) -> set[str]:
    return {name.split(".")[0] for name in names if name}


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_lower_layers_do_not_import_upper_ones(package: str) -> None:
    files = python_files(package)
    assert files, f"no Python files under {package}/ (is ROOT right?)"
    violations = {rel(p): sorted(top_level(imported_modules(p)) & FORBIDDEN[package]) for p in files}
    assert {f: v for f, v in violations.items() if v} == {}


def test_only_allowed_bot_files_import_the_bot_framework_sdk() -> None:
    files = python_files("bot")
    assert files, "no Python files under bot/"
    offenders = {rel(p): sorted(top_level(imported_modules(p)) & BOT_FRAMEWORK)
                 for p in files if rel(p) not in BOTBUILDER_ALLOWED}
    assert {f: v for f, v in offenders.items() if v} == {}, (
        "import the Bot Framework SDK only in the files listed in BOTBUILDER_ALLOWED (tests/test_layering.py)")


def test_the_allow_list_names_existing_files() -> None:
    missing = sorted(path for path in BOTBUILDER_ALLOWED if not (ROOT / path).is_file())
    assert missing == []


def test_the_import_reader_sees_every_kind_of_import(tmp_path: Path) -> None:
    """Guards the guard: a reader that missed imports would make the tests above pass vacuously."""
    source = tmp_path / "storage" / "sub" / "mod.py"
    source.parent.mkdir(parents=True)
    source.write_text(
        "import json, botbuilder.core\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from cards import amounts\n"
        "def f():\n"
        "    import bot.app\n"
        "    return importlib.import_module('botframework.connector')\n"
        "from . import sibling\n"
        "from ..money import to_minor\n"
        "from ... import outside\n"
    )
    names = imported_modules(source, root=tmp_path)
    assert {"json", "botbuilder.core", "typing", "cards", "bot.app", "botframework.connector", "storage.sub",
            "storage.sub.sibling", "storage.money", "outside"} <= names
    assert top_level(names) >= {"botbuilder", "cards", "bot", "botframework", "storage"}
