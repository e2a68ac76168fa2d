"""Facts written once: the names (methods, protocols, table kinds, splits), the defaults (schema and
dataclasses agree), and the helpers every layer shares (one progress switch, one sha256, one atomic
writer, one image reader)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from softref import names
from softref.config import BLOCKS, SCHEMA_PATH
from softref.losses import CUSA_METHODS
from softref.tables.kinds import KINDS

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "softref"
SCHEMA = yaml.safe_load(SCHEMA_PATH.read_text())


def _entry_schema(block: str) -> dict:
    """The schema of one block (``demo``) or of one entry of a named block (``experiments``); a
    dotted name (``experiments.mmref``) goes one level further down."""
    first, *rest = block.split(".")
    node = SCHEMA["properties"][first]
    if "additionalProperties" in node and isinstance(node["additionalProperties"], dict):
        node = node["additionalProperties"]
    for part in rest:
        node = node["properties"][part]
        if node.get("type") == "array":  # a list of entries (report.questions): each entry's schema
            node = node["items"]
    return node


def test_schema_enums_are_the_names() -> None:
    assert tuple(_entry_schema("experiments")["properties"]["method"]["enum"]) == names.METHODS
    assert tuple(_entry_schema("benchmarks")["properties"]["protocol"]["enum"]) == names.PROTOCOLS
    assert tuple(_entry_schema("tables")["properties"]["kind"]["enum"]) == names.TABLE_KINDS
    assert tuple(_entry_schema("references")["properties"]["split"]["enum"]) == names.SPLITS
    assert tuple(_entry_schema("experiments")["properties"]["augment"]["enum"]) == names.AUGMENTATIONS
    assert tuple(_entry_schema("experiments")["properties"]["tau_mode"]["enum"]) == names.TAU_MODES
    options = set(_entry_schema("benchmarks")["properties"]["options"]["properties"])
    assert options == {o for opts in names.PROTOCOL_OPTIONS.values() for o in opts}


def test_the_code_reads_the_same_names() -> None:
    from softref.data.manifest import SPLITS
    from softref.evaluate.benchmarks import PROTOCOL_OPTIONS, PROTOCOLS
    from softref.train.methods import family

    assert SPLITS is names.SPLITS and PROTOCOLS is names.PROTOCOLS and PROTOCOL_OPTIONS is names.PROTOCOL_OPTIONS
    assert CUSA_METHODS is names.CUSA_TERMS
    assert tuple(KINDS) == names.TABLE_KINDS
    assert {family(m).__name__ for m in names.METHODS} == {"softref.train.methods.cusa", "softref.train.methods.mmref"}


def _dataclass_defaults(cls: type) -> dict:
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def _plain(value):
    if dataclasses.is_dataclass(value):
        return {}  # a nested block: its own entry of BLOCKS checks its keys
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


@pytest.mark.parametrize("block", sorted(BLOCKS))
def test_schema_defaults_equal_the_dataclass_defaults(block: str) -> None:
    schema = _entry_schema(block)["properties"]
    defaults = _dataclass_defaults(BLOCKS[block])
    keys = set(defaults) - {"name"}
    # Every key with a dataclass default is in the schema, with the same default (and vice versa).
    assert set(schema) == {f.name for f in dataclasses.fields(BLOCKS[block])} - {"name"}
    for key in sorted(keys):
        assert "default" in schema[key], f"{block}.{key}: a dataclass default but none in the schema"
        assert schema[key]["default"] == _plain(defaults[key]), f"{block}.{key}"
    for key, prop in schema.items():
        if "default" in prop:
            assert key in defaults, f"{block}.{key}: a schema default but none in the dataclass"


def _defining(pattern: str) -> list[str]:
    found = []
    for path in PACKAGE.rglob("*.py"):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if re.search(pattern, line):
                found.append(f"{path.relative_to(PACKAGE)}:{number}")
    return found


@pytest.mark.parametrize(
    ("pattern", "home"),
    [
        (r"^\s*def _?progress_disabled\(", "runtime.py"),
        (r"^\s*def _?file_sha256\(", "files.py"),
        (r"^\s*def _?default_device\(", "runtime.py"),
        (r"^\s*def load_rgb\(", "data/images.py"),
        (r"^\s*def _?pre_caption\(", "data/captions.py"),
        (r"^\s*def (_same|attrs_equal)\(", "features/shards.py"),
        (r"\bmkstemp\(", None),
        (r'environ\.get\("CI"\)', "runtime.py"),
    ],
)
def test_one_definition(pattern: str, home: str | None) -> None:
    found = _defining(pattern)
    if home is None:
        assert found == []
    else:
        assert [f.split(":")[0] for f in found] == [home], found


def test_every_rename_into_place_goes_through_the_atomic_writer() -> None:
    """os.replace publishes a finished file; only softref.files does it for the DAG's artifacts (the
    run folder's superseded/ move and the teacher install's folder swap are moves, not writes)."""
    allowed = {"files.py", "train/trainer.py", "teachers/fetch.py"}
    found = {f.split(":")[0] for f in _defining(r"\bos\.replace\(")}
    assert found <= allowed, found - allowed


def test_pyproject_declares_every_import() -> None:
    """Every third-party module the package imports belongs to a distribution pyproject.toml names."""
    import ast
    import importlib.metadata
    import sys
    import tomllib

    project = tomllib.loads((PACKAGE.parents[1] / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + [d for deps in project["optional-dependencies"].values() for d in deps]
    declared_names = {re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0].lower().replace("_", "-") for d in declared}
    providers = importlib.metadata.packages_distributions()
    imported = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module.split(".")[0])
    third_party = {m for m in imported if m != "softref" and m not in sys.stdlib_module_names}
    missing = {m: providers.get(m) for m in sorted(third_party)
               if not {d.lower().replace("_", "-") for d in providers.get(m, [m])} & declared_names}
    assert missing == {}
