"""Import contracts of the service package, read from the source with ``ast`` (every import
statement, at module level or inside a function, plus ``importlib.import_module``/``__import__``
with a literal name):

1. nothing under consumer/ imports ``chatapp_devkit``: the devkit (devkit/) depends on the
   service, never the other way round, so the wheel works without it;
2. only the Kafka port (consumer/kafka/) imports ``confluent_kafka``.

A plain test rather than import-linter: no extra tool, and rule 2 (direct imports only, one
subpackage exempt) is one line here. .ci/run runs it with the rest of the suite.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "consumer"
KAFKA_PORT = PACKAGE / "kafka"


def imported_modules(path: Path, root: Path = ROOT) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path`` (a module under ``root``);
    relative imports resolved."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    package = parts if parts[-1] == "__init__" else parts[:-1]
    if package and package[-1] == "__init__":
        package = package[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            yield node.lineno, module
            for alias in node.names:  # "from consumer import x" may name a module
                yield node.lineno, f"{module}.{alias.name}"
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in ("import_module", "__import__"):
                yield node.lineno, node.args[0].value


def top_level(module: str) -> str:
    return module.split(".", 1)[0]


def service_files() -> list[Path]:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20 and PACKAGE / "app.py" in files, "the service's sources were not found"
    return files


def test_the_service_never_imports_the_devkit() -> None:
    offences = [
        f"{path.relative_to(ROOT)}:{line}: imports {module}"
        for path in service_files()
        for line, module in imported_modules(path)
        if top_level(module) == "chatapp_devkit"
    ]
    assert not offences, "consumer/ must not import the devkit (chatapp_devkit):\n" + "\n".join(offences)


def test_only_the_kafka_port_imports_confluent_kafka() -> None:
    offences = [
        f"{path.relative_to(ROOT)}:{line}: imports {module}"
        for path in service_files()
        if KAFKA_PORT not in path.parents
        for line, module in imported_modules(path)
        if top_level(module) == "confluent_kafka"
    ]
    assert not offences, "only consumer/kafka/ may import confluent_kafka:\n" + "\n".join(offences)


def test_the_devkit_is_not_in_the_service_package() -> None:
    moved = ["mockcluster.py", "local_cams", "registry_standin.py", "samples.py", "demo.py"]
    assert not [name for name in moved if (PACKAGE / name).exists()], "devkit modules belong in devkit/chatapp_devkit/"


def test_the_checker_sees_each_kind_of_import(tmp_path: Path) -> None:
    """The contracts fail loudly: each import form is found (a checker that sees nothing passes)."""
    fake = tmp_path / "consumer" / "sub"
    fake.mkdir(parents=True)
    source = fake / "mod.py"
    source.write_text(
        "import chatapp_devkit.samples\n"
        "from confluent_kafka import Producer\n"
        "from .. import kafka\n"
        "def later():\n"
        "    from chatapp_devkit import demo\n"
        "    import importlib\n"
        "    importlib.import_module('confluent_kafka.admin')\n"
    )
    assert sorted(set(imported_modules(source, tmp_path))) == [
        (1, "chatapp_devkit.samples"),
        (2, "confluent_kafka"),
        (2, "confluent_kafka.Producer"),
        (3, "consumer"),
        (3, "consumer.kafka"),
        (5, "chatapp_devkit"),
        (5, "chatapp_devkit.demo"),
        (6, "importlib"),
        (7, "confluent_kafka.admin"),
    ]
