"""Config schema and typed config: every key described with a default, cross references checked."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from softref.config import SCHEMA_PATH, ConfigError, load_config, read_config, validate_raw

REPO = Path(__file__).resolve().parents[1]


def _walk(schema: dict, path: str, required: frozenset = frozenset()):
    """Yield (path, property schema, is_required) for every property in the schema."""
    for name, prop in (schema.get("properties") or {}).items():
        yield f"{path}.{name}", prop, name in required
        yield from _walk(prop, f"{path}.{name}", frozenset(prop.get("required", ())))
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        yield from _walk(extra, f"{path}.<name>", frozenset(extra.get("required", ())))


def test_every_schema_key_has_description_and_default():
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    props = list(_walk(schema, "config"))
    assert len(props) > 40
    for path, prop, required in props:
        assert prop.get("description"), f"{path} has no description"
        # Protocol options apply to one protocol each: a schema default would put, say, an eccv
        # option into every person benchmark. Their defaults live in the runner and are named
        # in each description.
        if ".options." in path:
            assert "default" in prop["description"], f"{path}: its description must name the default"
            continue
        assert required or "default" in prop, f"{path} is optional but has no default"


def test_default_config_loads():
    cfg = read_config(REPO / "config.yaml")
    assert set(cfg.datasets) >= {"demo-coco", "demo-person"}
    assert cfg.teachers_of("demo-coco", "image") == ["efficientnet-lite0", "oracle-image"]
    assert cfg.teachers_of("demo-coco", "text") == ["all-mpnet-base-v2", "oracle-text"]
    assert cfg.features.dtype == "float16"


def test_defaults_are_filled():
    raw = {"datasets": {"d": {"format": "karpathy", "root": "x"}}}
    cfg = load_config(validate_raw(raw))
    assert cfg.datasets["d"].num_shards == 1
    assert cfg.demo.num_identities == 60


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda c: c["datasets"]["demo-coco"].update(teachers=["nope"]), "datasets.demo-coco.teachers"),
        (lambda c: c["datasets"]["demo-coco"].update(num_shards="two"), "num_shards"),
        (lambda c: c["teachers"]["efficientnet-lite0"].update(kind="resnet"), "resnet"),
        (lambda c: c["teachers"]["efficientnet-lite0"].pop("weights"), "weights"),
        (lambda c: c["features"].update(dtype="int8"), "int8"),
    ],
)
def test_bad_values_name_the_key(edit, expected):
    raw = yaml.safe_load((REPO / "config.yaml").read_text())
    raw = copy.deepcopy(raw)
    edit(raw)
    with pytest.raises(ConfigError, match=expected):
        load_config(validate_raw(raw))


def test_experiment_cross_references():
    raw = yaml.safe_load((REPO / "config.yaml").read_text())
    raw["students"] = {"s": {"architecture": "softref-tiny"}}
    raw["experiments"] = {"e": {"dataset": "demo-coco", "student": "s", "image_teacher": "all-mpnet-base-v2"}}
    with pytest.raises(ConfigError, match=r"experiments\.e\.image_teacher: expected a image teacher"):
        load_config(validate_raw(raw))
    raw["experiments"] = {"e": {"dataset": "nope", "student": "s"}}
    with pytest.raises(ConfigError, match=r"experiments\.e\.dataset: unknown dataset 'nope'"):
        load_config(validate_raw(raw))


def test_student_size_augmentation_and_temperature_keys():
    raw = yaml.safe_load((REPO / "config.yaml").read_text())
    raw["students"] = {"s": {"architecture": "softref-tiny", "image_size": [96, 32]}}
    raw["experiments"] = {"e": {"dataset": "demo-person", "student": "s", "method": "base", "augment": "reid",
                                "tau_mode": "fixed", "tau": 0.02}}
    raw["tables"], raw["report"] = {}, {}
    cfg = load_config(validate_raw(copy.deepcopy(raw)))
    assert cfg.students["s"].image_size == (96, 32)
    ex = cfg.experiments["e"]
    assert (ex.augment, ex.tau_mode, ex.tau, ex.retrain_on_trainval) == ("reid", "fixed", 0.02, False)
    # A learned tau starts inside its clamp range; a fixed one may be anything positive.
    raw["experiments"]["e"].update(tau_mode="learned", tau=0.005)
    with pytest.raises(ConfigError, match=r"experiments\.e\.tau: a learned temperature starts inside its clamp "
                                          r"range \[0\.01, 0\.1\], found 0\.005; set tau_mode: fixed"):
        load_config(validate_raw(copy.deepcopy(raw)))
    for key, value, expected in (("augment", "strong", r"experiments\.e\.augment: expected one of \['none', 'reid'\]"),
                                 ("tau_mode", "annealed", r"experiments\.e\.tau_mode: expected one of")):
        bad = copy.deepcopy(raw)
        bad["experiments"]["e"].update({key: value, "tau": 0.05})
        with pytest.raises(ConfigError, match=expected):
            load_config(validate_raw(bad))
    raw["students"]["s"]["image_size"] = [96]
    with pytest.raises(ConfigError, match=r"students\.s\.image_size: expected minItems 2"):
        validate_raw(raw)
