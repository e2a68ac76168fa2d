"""The bad-input table: every mistake a user can make in a config, a dataset, a weights file, a shard or
on the command line, each refused with words that name the file, key or row, and nothing written.

Unit-level calls only (no Snakemake, no DAG): the whole file runs in seconds. The cases of issue 13
(NaN / inf lr, NaN alpha, min_lr > lr, format "coco", option identity_patern, split testing, missing
student weights, key learning_rate, empty captions, captions: [], a corrupt checkpoint, NaN teacher
rows, --k -3, --k 0, validate's blame, check-dataset on sentence pairs) are here beside the ones
found around them.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from softref.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from softref.cli import main
from softref.data.adapters import AnnotationError, prepare
from softref.data.expected import check_dataset, format_check
from softref.data.manifest import file_sha256, write_manifest
from softref.features import FeatureStore, ShardError, ShardWriter
from softref.features.validate import validate_shards
from softref.files import remove_stale_temporaries, temporary_name, write_text_atomic
from softref.preflight import check_config

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"
NAN, INF = math.nan, math.inf


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")} if folder.exists() else set()


# ---------------------------------------------------------------------------------------------
# Config: every problem named by its key path, one line each (softref check-config, preflight)
# ---------------------------------------------------------------------------------------------


def demo_config() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


def ex(c: dict, name: str) -> dict:
    return c["experiments"][name]


def _set(path: str, value) -> Callable[[dict], None]:
    """An edit setting the value at a dotted key path (creating mappings on the way)."""
    def edit(c: dict) -> None:
        *parents, last = path.split(".")
        node = c
        for key in parents:
            node = node.setdefault(key, {}) if isinstance(node, dict) else node[int(key)]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return edit


def _rename(path: str, new: str) -> Callable[[dict], None]:
    def edit(c: dict) -> None:
        *parents, last = path.split(".")
        node = c
        for key in parents:
            node = node[key]
        node[new] = node.pop(last)
    return edit


E = "experiments"
CONFIG_CASES = [
    # (id, edit, the key path the one problem starts with, words it must hold)
    ("lr-nan", _set(f"{E}.demo-cusa.lr", NAN), f"{E}.demo-cusa.lr", "expected a finite number > 0, found nan"),
    ("lr-inf", _set(f"{E}.demo-cusa.lr", INF), f"{E}.demo-cusa.lr", "expected a finite number > 0, found inf"),
    ("lr-minus-inf", _set(f"{E}.demo-base.lr", -INF), f"{E}.demo-base.lr", "finite number > 0, found -inf"),
    ("lr-a-word", _set(f"{E}.demo-base.lr", "fast"), f"{E}.demo-base.lr", "expected number, found 'fast'"),
    ("alpha-nan", _set(f"{E}.demo-cusa.alpha", NAN), f"{E}.demo-cusa.alpha", "expected a finite number >= 0, found nan"),
    ("beta-inf", _set(f"{E}.demo-cusa.beta", INF), f"{E}.demo-cusa.beta", "found inf"),
    ("teacher-tau-nan", _set(f"{E}.demo-cusa.teacher_tau", NAN), f"{E}.demo-cusa.teacher_tau", "> 0, found nan"),
    ("weight-decay-nan", _set(f"{E}.demo-usa.weight_decay", NAN), f"{E}.demo-usa.weight_decay", "found nan"),
    ("min-lr-nan", _set(f"{E}.demo-csa.min_lr", NAN), f"{E}.demo-csa.min_lr", "found nan"),
    ("min-lr-above-lr", _set(f"{E}.demo-cusa.min_lr", 0.01), f"{E}.demo-cusa.min_lr",
     "expected <= lr (0.001), found 0.01"),
    ("mmref-tau-proxy-nan", _set(f"{E}.demo-mmref.mmref.tau_proxy", NAN), f"{E}.demo-mmref.mmref.tau_proxy",
     "> 0, found nan"),
    ("mmref-soft-mix-inf", _set(f"{E}.demo-mmref-soft.mmref.soft_mix", INF), f"{E}.demo-mmref-soft.mmref.soft_mix",
     "in [0, 1], found inf"),
    ("refine-lam-nan", _set("benchmarks.demo-person-test.refine.lam", NAN), "benchmarks.demo-person-test.refine.lam",
     "found nan"),
    ("refine-tau-inf", _set("benchmarks.demo-person-test.refine.tau", INF), "benchmarks.demo-person-test.refine.tau",
     "found inf"),
    ("split-fraction-nan", _set("demo.split_fractions.0", NAN), "demo.split_fractions.0", "found nan"),
    ("format-coco", _set("datasets.demo-person.format", "coco"), "datasets.demo-person.format",
     "unknown format 'coco'; known: ['albef'"),
    ("format-typo", _set("datasets.demo-coco.format", "karpathi"), "datasets.demo-coco.format",
     "did you mean 'karpathy'?"),
    ("option-identity_patern", _rename("datasets.demo-coco.options.identity_pattern", "identity_patern"),
     "datasets.demo-coco.options.identity_patern", "not an option of format 'karpathy'; its options: "
     "['identity_pattern', 'image_dir']; did you mean 'identity_pattern'?"),
    ("option-of-an-optionless-format", _set("datasets.demo-person.options", {"val_fraction": 0.2}),
     "datasets.demo-person.options.val_fraction", "not an option of format 'cuhk-pedes'; its options: none"),
    ("split-testing", _set("benchmarks.demo-coco-test.split", "testing"), "benchmarks.demo-coco-test.split",
     "expected one of ['train', 'val', 'test', 'query', 'gallery'], found 'testing'; did you mean 'test'?"),
    ("references-split", _set("references.split", "training"), "references.split", "did you mean 'train'?"),
    ("protocol-option-typo", _set("benchmarks.demo-coco-eccv.options", {"relevence": "identity"}),
     "benchmarks.demo-coco-eccv.options", "unknown key(s) ['relevence']; expected some of ['eccv_dir', 'k', "
     "'mode', 'relevance']; did you mean 'relevance' for 'relevence'?"),
    ("protocol-option-of-another-protocol", _set("benchmarks.demo-coco-eccv.options", {"mode": "leave-one-out"}),
     "benchmarks.demo-coco-eccv.options.mode", "not an option of protocol 'eccv'; its options: ['eccv_dir', "
     "'relevance']"),
    ("student-weights-missing", _set("students.demo-tiny.pretrained", "models/openai/ViT-B-32.pt"),
     "students.demo-tiny.pretrained", "student weights not found: "),
    ("teacher-weights-missing", _set("teachers.efficientnet-lite0.weights", "models/efficientnet-lite0/gone.pth"),
     "teachers.efficientnet-lite0.weights", "teacher weights not found: "),
    ("teacher-folder-missing", _set("teachers.all-mpnet-base-v2.weights", "models/no-such-mpnet"),
     "teachers.all-mpnet-base-v2.weights", "models/no-such-mpnet"),
    ("dataset-root-missing", _set("datasets.demo-coco.root", "/nonexistent/coco"), "datasets.demo-coco.root",
     "dataset root folder not found: /nonexistent/coco"),
    ("annotation-file-missing", _set("datasets.demo-sts.root", str(FIXTURES / "cub")), "datasets.demo-sts.annotations",
     "annotation file not found: "),
    ("misspelt-key-learning_rate", _rename(f"{E}.demo-base.lr", "learning_rate"), f"{E}.demo-base",
     "unknown key(s) ['learning_rate']"),
    ("unknown-block", _set("typo_block", {}), "config", "unknown key(s) ['typo_block']"),
    ("unknown-teacher", _set("datasets.demo-retrieval.teachers", ["no-such-teacher"]), "datasets.demo-retrieval.teachers",
     "unknown teacher 'no-such-teacher'"),
    ("num-shards-zero", _set("datasets.demo-coco.num_shards", 0), "datasets.demo-coco.num_shards", ">= 1, found 0"),
    ("method-unknown", _set(f"{E}.demo-base.method", "cusaa"), f"{E}.demo-base.method", "found 'cusaa'"),
    ("epochs-zero", _set(f"{E}.demo-base.epochs", 0), f"{E}.demo-base.epochs", ">= 1, found 0"),
    ("gpus-not-dividing-the-batch", _set(f"{E}.demo-base.gpus", 3), f"{E}.demo-base.gpus",
     "a divisor of batch_size (32), found 3"),
    ("benchmark-unknown-dataset", _set("benchmarks.demo-sts.dataset", "nope"), "benchmarks.demo-sts.dataset",
     "unknown dataset 'nope'"),
    ("table-unknown-experiment", _set("tables.table1.experiments", ["demo-base", "nope"]), "tables.table1.experiments",
     "unknown experiment 'nope'"),
]


@pytest.mark.parametrize(("edit", "path", "words"), [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES])
def test_config_mistake_is_one_line_naming_its_key(edit, path, words, tmp_path) -> None:
    raw = demo_config()
    edit(raw)
    cfg, problems = check_config(raw, base=REPO)
    assert cfg is None
    assert len(problems) == 1, problems  # one mistake, one line: no derived problem, no schema dump
    assert problems[0].startswith(f"{path}: ") and words in problems[0], problems[0]
    assert "\n" not in problems[0] and len(problems[0]) < 600
    assert files_under(tmp_path) == set()


def ten_mistakes() -> dict:
    raw = demo_config()
    for edit in (
        _set(f"{E}.demo-cusa.lr", NAN), _set(f"{E}.demo-csa.alpha", NAN), _set(f"{E}.demo-usa.min_lr", 0.01),
        _set("datasets.demo-person.format", "coco"),
        _rename("datasets.demo-coco.options.identity_pattern", "identity_patern"),
        _set("benchmarks.demo-coco-test.split", "testing"),
        _set("students.demo-tiny.pretrained", "models/openai/ViT-B-32.pt"),
        _rename(f"{E}.demo-base.lr", "learning_rate"),
        _set("teachers.efficientnet-lite0.weights", "models/efficientnet-lite0/missing.pth"),
        _set("datasets.demo-sts.root", "/data/sts"),
    ):
        edit(raw)
    return raw


def test_ten_mistakes_are_listed_in_one_run(tmp_path, capsys) -> None:
    path = tmp_path / "ten-mistakes.yaml"
    path.write_text(yaml.safe_dump(ten_mistakes(), sort_keys=False))
    assert main(["check-config", str(path), "--directory", str(REPO)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{path}: 10 problem(s):"
    keys = [line.strip().split(": ", 1)[0] for line in out[1:]]
    assert sorted(keys) == sorted([
        f"{E}.demo-cusa.lr", f"{E}.demo-csa.alpha", f"{E}.demo-usa.min_lr", "datasets.demo-person.format",
        "datasets.demo-coco.options.identity_patern", "benchmarks.demo-coco-test.split",
        "students.demo-tiny.pretrained", f"{E}.demo-base", "teachers.efficientnet-lite0.weights",
        "datasets.demo-sts.root",
    ])
    assert files_under(tmp_path) == {"ten-mistakes.yaml"}


# ---------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------


CLI_CASES = [
    ("neighbours-k-minus-3", ["neighbours", "--references", "r.h5", "--identity", "1", "--k", "-3"], 2,
     "argument --k: expected an integer >= 1, got -3"),
    ("neighbours-k-zero", ["neighbours", "DIR", "--id", "x", "--k", "0"], 2, "expected an integer >= 1, got 0"),
    ("neighbours-k-a-word", ["neighbours", "DIR", "--id", "x", "--k", "five"], 2, "got 'five'"),
    ("check-config-missing-file", ["check-config", "no-such.yaml"], 1, "no-such.yaml: config file not found"),
    ("check-config-bad-yaml", ["check-config", "BAD_YAML"], 1, "bad.yaml: not valid YAML"),
    ("check-config-missing-directory", ["check-config", "config.yaml", "--directory", "/no/such/dir"], 2,
     "--directory: no such folder: /no/such/dir"),
    ("inspect-missing-file", ["inspect", "gone.h5"], 2, "no such file: gone.h5"),
    ("validate-missing-folder", ["validate", "no-such-features"], 2, "feature directory not found: no-such-features"),
]


@pytest.mark.parametrize(("argv", "status", "words"), [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_command_line_mistake(argv, status, words, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text("experiments: [unclosed\n")
    argv = [str(tmp_path / "bad.yaml") if a == "BAD_YAML" else a for a in argv]
    before = files_under(tmp_path)
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse refuses a bad value before any command runs
        code = exit_.code
    captured = capsys.readouterr()
    assert code == status
    assert words in captured.out + captured.err
    assert files_under(tmp_path) == before


def test_check_dataset_of_sentence_pairs_claims_no_images(tmp_path, capsys) -> None:
    root = tmp_path / "sts"
    root.mkdir()
    (root / "pairs.tsv").write_text("sentence1\tsentence2\tscore\na cat\ta dog\t3.5\nrain\tsun\t1.0\n")
    assert main(["check-dataset", "sts-pairs", str(root)]) == 0
    out = capsys.readouterr().out
    assert "images on disk: none listed (the dataset has no images)" in out
    assert "all present" not in out
    assert files_under(root) == {"pairs.tsv"}


# ---------------------------------------------------------------------------------------------
# Captions: empty ones, and images with none, in every caption format
# ---------------------------------------------------------------------------------------------


def _json(path: Path, edit: Callable) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _person(root: Path, name: str, field: str) -> None:
    """The CUHK-PEDES fixture rewritten as another person format (its file name and image field)."""
    records = json.loads((root / "reid_raw.json").read_text())
    for r in records:
        r[field] = r.pop("file_path")
    (root / "reid_raw.json").unlink()
    (root / name).write_text(json.dumps(records))


def _karpathy_sentences(value):
    def edit(d):
        d["images"][0]["sentences"] = value
        d["images"][0]["sentids"] = [s["sentid"] for s in value]
    return edit


CAPTION_CASES = [
    # (id, format, fixture, edit of the fixture root, words: the file and the record's id)
    ("karpathy-empty-caption", "karpathy", "karpathy/coco",
     lambda r: _json(r / "dataset_coco.json", lambda d: d["images"][0]["sentences"][0].update(raw="")),
     ["dataset_coco.json", "1 empty caption(s)", "text_id '0'"]),
    ("karpathy-whitespace-caption", "karpathy", "karpathy/coco",
     lambda r: _json(r / "dataset_coco.json", lambda d: d["images"][0]["sentences"][1].update(raw=" \t ")),
     ["dataset_coco.json", "empty caption(s)", "text_id '1'"]),
    ("karpathy-no-sentences", "karpathy", "karpathy/coco",
     lambda r: _json(r / "dataset_coco.json", _karpathy_sentences([])),
     ["dataset_coco.json", "1 image(s) with no caption", "image_id '9'", "COCO_train2014_000000000009.jpg"]),
    ("albef-empty-caption-in-train", "albef", "albef",
     lambda r: _json(r / "coco_train.json", lambda d: d[0].update(caption="")),
     ["coco_", "empty caption(s)", "COCO_train2014_000000000009"]),
    ("albef-captions-empty-list", "albef", "albef",
     lambda r: _json(r / "coco_test.json", lambda d: d[0].update(caption=[])),
     ["image(s) with no caption", "COCO_val2014_000000000074"]),
    ("albef-blank-in-caption-list", "albef", "albef",
     lambda r: _json(r / "coco_test.json", lambda d: d[0].update(caption=["  "])),
     ["empty caption(s)", "image(s) with no caption", "COCO_val2014_000000000074"]),
    ("cusa-json-empty-caption", "cusa-json", "cusa-json",
     lambda r: _json(r / "new_test.json", lambda d: d[0].update(caption="")),
     ["empty caption(s)", "COCO_val2014_000000146503.jpg"]),
    ("cuhk-pedes-empty-caption", "cuhk-pedes", "cuhk-pedes",
     lambda r: _json(r / "reid_raw.json", lambda d: d[0]["captions"].__setitem__(0, "")),
     ["reid_raw.json", "empty caption(s)", "text_id 'CUHK01/0107002.png#0'"]),
    ("cuhk-pedes-captions-empty-list", "cuhk-pedes", "cuhk-pedes",
     lambda r: _json(r / "reid_raw.json", lambda d: d[0].update(captions=[])),
     ["reid_raw.json", "1 image(s) with no caption", "image_id 'CUHK01/0107002.png'"]),
    ("icfg-pedes-whitespace-caption", "icfg-pedes", "cuhk-pedes",
     lambda r: (_json(r / "reid_raw.json", lambda d: d[1]["captions"].__setitem__(1, "   ")),
                _person(r, "ICFG-PEDES.json", "file_path")),
     ["ICFG-PEDES.json", "empty caption(s)", "text_id 'CUHK01/0107004.png#1'"]),
    ("rstpreid-captions-empty-list", "rstpreid", "cuhk-pedes",
     lambda r: (_json(r / "reid_raw.json", lambda d: d[0].update(captions=[])),
                _person(r, "data_captions.json", "img_path")),
     ["data_captions.json", "image(s) with no caption", "image_id 'CUHK01/0107002.png'"]),
    ("reed-cub-empty-caption-file", "reed-cub", "reed-cub",
     lambda r: (r / "text_c10/002.Laysan_Albatross/Laysan_Albatross_0002_1027.txt").write_text("\n \n"),
     ["image(s) with no caption", "002.Laysan_Albatross/Laysan_Albatross_0002_1027"]),
]


@pytest.mark.parametrize(("fmt", "fixture", "edit", "words"), [c[1:] for c in CAPTION_CASES],
                         ids=[c[0] for c in CAPTION_CASES])
def test_empty_captions_are_an_error_naming_the_record(fmt, fixture, edit, words, tmp_path) -> None:
    root = Path(shutil.copytree(FIXTURES / fixture, tmp_path / "root"))
    edit(root)
    out = tmp_path / "out"
    options = {"captions_per_image": None, "val_fraction": 0.0} if fmt == "reed-cub" else {}
    with pytest.raises(AnnotationError) as raised:
        prepare(fmt, root, out, check_images=False, **options)
    message = str(raised.value)
    assert all(w in message for w in words), message
    assert "skip_missing" in message
    assert not out.exists()


def test_check_dataset_refuses_an_empty_caption(tmp_path) -> None:
    root = Path(shutil.copytree(FIXTURES / "cuhk-pedes", tmp_path / "root"))
    _json(root / "reid_raw.json", lambda d: d[2]["captions"].__setitem__(0, ""))
    with pytest.raises(AnnotationError, match=r"reid_raw.json: 1 empty caption\(s\)"):
        check_dataset("cuhk-pedes", root, check_images=False)


def test_skip_missing_leaves_empty_captions_out_and_reports_them(tmp_path) -> None:
    root = Path(shutil.copytree(FIXTURES / "cuhk-pedes", tmp_path / "root"))
    _json(root / "reid_raw.json", lambda d: (d[0].update(captions=[]), d[1]["captions"].__setitem__(0, " ")))
    result = prepare("cuhk-pedes", root, tmp_path / "out", skip_missing=True)
    skipped = json.loads((tmp_path / "out" / "skipped.json").read_text())
    assert skipped["uncaptioned_images"] == [{"image_id": "CUHK01/0107002.png", "path": "imgs/CUHK01/0107002.png"}]
    assert skipped["empty_captions"] == [{"text_id": "CUHK01/0107004.png#0", "image_id": "CUHK01/0107004.png"}]
    assert (result.num_empty_captions, result.num_uncaptioned_images) == (1, 1)
    import pandas as pd

    texts = pd.read_parquet(tmp_path / "out" / "texts.parquet")
    assert (texts["caption"].str.strip() != "").all() and "CUHK01/0107004.png#0" not in set(texts["text_id"])


# ---------------------------------------------------------------------------------------------
# Weights and checkpoints: refused by weights-only loading, never with advice to load unsafely
# ---------------------------------------------------------------------------------------------


class Payload:
    """A class pickled into a checkpoint: weights-only loading must refuse it."""


def _write_weights(kind: str, path: Path) -> None:
    import torch

    if kind == "garbage":
        path.write_bytes(b"not a checkpoint" * 64)
    elif kind == "pickled-object":
        torch.save({"model": Payload()}, path)
    elif kind == "truncated":
        torch.save({"w": torch.zeros(4096)}, path)
        path.write_bytes(path.read_bytes()[:3000])


def _load(loader: str, path: Path) -> None:
    if loader == "checkpoint":
        load_checkpoint(path)
    elif loader == "efficientnet":
        from softref.teachers.efficientnet import load_efficientnet_lite0

        load_efficientnet_lite0(path)
    elif loader == "unicom":
        from softref.teachers.unicom import read_state_dict

        read_state_dict(path)
    elif loader == "student":
        from softref.models.student import Student

        Student("softref-tiny", pretrained=str(path))


WEIGHT_CASES = [(loader, kind) for loader in ("checkpoint", "efficientnet", "unicom", "student")
                for kind in ("garbage", "pickled-object", "truncated")
                if not (loader in ("efficientnet", "unicom") and kind == "truncated")]


@pytest.mark.parametrize(("loader", "kind"), WEIGHT_CASES, ids=[f"{a}-{b}" for a, b in WEIGHT_CASES])
def test_a_bad_weights_file_is_refused_without_unsafe_advice(loader, kind, tmp_path) -> None:
    path = tmp_path / "weights.pt"
    _write_weights(kind, path)
    with pytest.raises(Exception) as raised:
        _load(loader, path)
    message = str(raised.value)
    assert str(path) in message, message
    assert "weights_only=False" not in message and "False" not in message and "trust" not in message, message
    if kind == "pickled-object":
        assert "Unsupported global" in message and "Payload" in message, message
    assert files_under(tmp_path) == {"weights.pt"}


def test_no_source_or_doc_advises_unsafe_loading() -> None:
    found = [str(p.relative_to(REPO)) for folder in ("src", "workflow", "docs", "configs")
             for p in (REPO / folder).rglob("*") if p.is_file() and p.suffix in (".py", ".md", ".smk", ".yaml")
             and "weights_only=False" in p.read_text(errors="replace")]
    found += ["README.md"] if "weights_only=False" in (REPO / "README.md").read_text() else []
    assert found == []


def test_load_checkpoint_names_a_file_holding_no_dict(tmp_path) -> None:
    import torch

    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match=r"list.pt: expected a dict at the top level, found list"):
        load_checkpoint(tmp_path / "list.pt")


# A real failed write: the child process may write files of at most 1 MiB (RLIMIT_FSIZE; SIGXFSZ
# ignored, so the write returns an error as on a full disk), then saves a 4 MiB checkpoint.
_SHORT_WRITE = """
import resource, signal, sys
from pathlib import Path
import torch
from softref.checkpoints import CheckpointWriteError, save_checkpoint
path = Path(sys.argv[1])
if sys.argv[2] == "existing":
    save_checkpoint({"model": {"w": torch.ones(8)}}, path)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    save_checkpoint({"model": {"w": torch.zeros(1 << 20)}}, path)
except CheckpointWriteError as err:
    print(err)
    sys.exit(3)
"""


@pytest.mark.parametrize("before", ["absent", "existing"])
def test_a_failed_checkpoint_write_names_the_file_and_the_free_space_and_leaves_nothing(tmp_path, before) -> None:
    import torch

    path = tmp_path / "run" / "last.pt"
    done = subprocess.run([sys.executable, "-c", _SHORT_WRITE, str(path), before], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 3, done.stderr
    message = done.stdout.strip()
    assert message.startswith(f"{path}: writing the checkpoint failed (")
    assert f"GB free on the file system of {path.parent}" in message
    assert "Free disk space (or raise the file-size limit) and rerun the job" in message
    assert "weights_only" not in message
    if before == "absent":
        assert f"{path} was not written" in message
        assert sorted(p.name for p in path.parent.iterdir()) == []
    else:
        assert f"{path} is as it was" in message
        assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]
        assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(8))


def test_a_checkpoint_in_a_folder_that_cannot_be_made_is_a_clear_error(tmp_path) -> None:
    import torch

    (tmp_path / "runs").write_text("a file where the run folder should be")
    path = tmp_path / "runs" / "x" / "last.pt"
    with pytest.raises(OSError, match=r"writing the checkpoint failed") as caught:
        save_checkpoint({"model": {"w": torch.ones(2)}}, path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and f"{path} was not written" in message
    assert f"Check that {path.parent} can be written and rerun the job" in message and "Free disk" not in message


def test_a_programming_error_inside_torch_save_is_not_called_a_failed_write(tmp_path) -> None:
    import torch

    base = torch.zeros(4)
    # Two views of one storage in two dtypes: torch.save refuses it (a RuntimeError that is no write failure).
    with pytest.raises(RuntimeError, match="view the same data as different types") as caught:
        save_checkpoint({"a": base, "b": base.view(torch.int32)}, tmp_path / "c.pt")
    assert "writing the checkpoint failed" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Shards: NaN rows named by shard, row and id; validate blames the right shard
# ---------------------------------------------------------------------------------------------


def shard_attrs(shard: int, num_shards: int, **over) -> dict:
    return {"teacher": "toy", "weights_sha256": "a" * 64, "preprocess": "none", "normalized": True,
            "manifest_sha256": "b" * 64, "shard": shard, "num_shards": num_shards, "modality": "images", **over}


def write_shards(folder: Path, num_shards: int = 2, rows: int = 4, over: dict | None = None) -> list[Path]:
    paths = []
    for s in range(num_shards):
        path = folder / "toy" / f"images-{s}.h5"
        with ShardWriter(path, num_rows=rows, dim=3, dtype="float32", attrs=shard_attrs(s, num_shards)) as w:
            w.write(0, [f"s{s}r{r}" for r in range(rows)], np.ones((rows, 3), np.float32))
        for key, value in (over or {}).get(s, {}).items():
            with h5py.File(path, "r+") as f:
                f.attrs[key] = value
        paths.append(path)
    return paths


def _poison(path: Path, row: int, value: float) -> None:
    with h5py.File(path, "r+") as f:
        f["features"][row, 1] = value


@pytest.mark.parametrize(("shard", "row", "value"), [(0, 1, NAN), (1, 3, INF), (1, 0, -INF)],
                         ids=["nan-in-shard-0", "inf-in-shard-1", "minus-inf-first-row"])
def test_a_non_finite_teacher_row_names_its_shard_row_and_id(shard, row, value, tmp_path) -> None:
    paths = write_shards(tmp_path)
    _poison(paths[shard], row, value)
    before = files_under(tmp_path)
    with FeatureStore(paths) as store, pytest.raises(ShardError) as raised:
        store.get(["s0r0", f"s{shard}r{row}", "s1r1"])
    message = str(raised.value)
    assert message.startswith(f"{paths[shard]}: row {row} (id 's{shard}r{row}') holds non-finite features"), message
    assert files_under(tmp_path) == before


def test_the_training_collator_stops_at_the_first_non_finite_batch(tmp_path) -> None:
    import torch

    from softref.train.data import BatchCollator

    images = write_shards(tmp_path)
    _poison(images[1], 2, NAN)
    items = [(torch.zeros(3, 4, 4), "a caption", f"s{s}r{r}", f"s{s}r{r}", 0, "p", k) for k, (s, r) in enumerate(((0, 0), (1, 2)))]
    with FeatureStore(images) as store:
        collate = BatchCollator(lambda captions: torch.zeros(len(captions), 4, dtype=torch.long), store, store)
        with pytest.raises(ShardError, match=r"images-1.h5: row 2 \(id 's1r2'\) holds non-finite"):
            collate(items)


VALIDATE_CASES = [
    # (id, shards, tampered attrs per shard, blamed files, files that must not be blamed, words)
    ("pair-shard-0-other-teacher", 2, {0: {"teacher": "other"}}, ["images-0.h5"], ["images-1.h5"],
     "expected 'toy' (as the folder's name says)"),
    ("pair-shard-1-other-teacher", 2, {1: {"teacher": "other"}}, ["images-1.h5"], ["images-0.h5"],
     "expected 'toy' (as the folder's name says)"),
    ("pair-tied-weights", 2, {0: {"weights_sha256": "c" * 64}}, [], ["images-0.h5: attr", "images-1.h5: attr"],
     "nothing says which is right"),
    ("triple-odd-shard-0", 3, {0: {"preprocess": "other"}}, ["images-0.h5"], ["images-1.h5: attr", "images-2.h5: attr"],
     "expected 'none' (as in images-1.h5, images-2.h5)"),
]


@pytest.mark.parametrize(("num_shards", "over", "blamed", "spared", "words"), [c[1:] for c in VALIDATE_CASES],
                         ids=[c[0] for c in VALIDATE_CASES])
def test_validate_blames_the_odd_shard(num_shards, over, blamed, spared, words, tmp_path) -> None:
    write_shards(tmp_path, num_shards, over=over)
    before = files_under(tmp_path)
    report = validate_shards(tmp_path / "toy")
    text = "\n".join(report.problems)
    assert not report.ok and words in text, text
    for name in blamed:
        assert any(p.startswith(str(tmp_path / "toy" / name)) for p in report.problems), text
    for name in spared:
        assert not any(p.startswith(str(tmp_path / "toy" / name)) or f"/{name}" in p.split(":")[0]
                       for p in report.problems if "disagree" not in p), text
    assert files_under(tmp_path) == before


def test_validate_with_the_manifest_blames_the_shard_of_another_manifest(tmp_path) -> None:
    import pandas as pd

    ids = [f"s{s}r{r}" for s in range(2) for r in range(4)]
    manifest = tmp_path / "images.parquet"
    write_manifest(pd.DataFrame({"image_id": ids, "path": [f"{i}.jpg" for i in ids], "identity": ids,
                                 "split": ["train"] * 8}), manifest, "images")
    sha = file_sha256(manifest)
    write_shards(tmp_path, 2, over={0: {"manifest_sha256": "d" * 64}, 1: {"manifest_sha256": sha}})
    report = validate_shards(tmp_path / "toy", images_manifest=manifest)
    blamed = [p for p in report.problems if "manifest_sha256" in p]
    assert blamed and all(p.startswith(str(tmp_path / "toy" / "images-0.h5")) for p in blamed), report.problems


def test_a_full_disk_during_a_shard_write_names_the_shard_and_leaves_nothing(tmp_path) -> None:
    """A file-size limit (RLIMIT_FSIZE, as `ulimit -f`) in a child: a clear error, exit 1, no file."""
    out = tmp_path / "images-0.h5"
    code = (
        "import resource, numpy as np\n"
        "from softref.features import ShardWriter\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))\n"
        f"attrs = {shard_attrs(0, 1)!r}\n"
        f"with ShardWriter({str(out)!r}, num_rows=64, dim=256, dtype='float32', attrs=attrs) as w:\n"
        "    for s in range(0, 64, 8):\n"
        "        w.write(s, [f'i{i}' for i in range(s, s + 8)], np.ones((8, 256), np.float32))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO / "src"), "PYTHONDONTWRITEBYTECODE": "1"})
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1, proc.stderr
    assert last.startswith(f"softref.features.shards.ShardError: {out}: writing the batch at row"), last
    assert "File too large (errno 27)" in last and "no shard was written" in last
    assert files_under(tmp_path) == set()


# ---------------------------------------------------------------------------------------------
# Files: umask permissions, stale temporaries, the checkout's package first
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077], ids=["umask-022", "umask-027", "umask-077"])
def test_outputs_follow_the_umask(umask, tmp_path) -> None:
    import torch

    old = os.umask(umask)
    try:
        write_text_atomic(tmp_path / "a.txt", "x")
        save_checkpoint({"w": torch.zeros(2)}, tmp_path / "c.pt")
        with ShardWriter(tmp_path / "images-0.h5", num_rows=1, dim=2, attrs=shard_attrs(0, 1)) as w:
            w.write(0, ["a"], np.ones((1, 2)))
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes == dict.fromkeys(("a.txt", "c.pt", "images-0.h5"), 0o666 & ~umask)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("owner", ["dead", pytest.param("zombie", marks=pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="zombies are told apart through /proc")), "alive"])
def test_a_temporary_file_of_a_killed_writer_is_removed_by_the_next_write(owner, tmp_path) -> None:
    target = tmp_path / "table1.csv"
    child = None
    if owner == "dead":
        pid = _dead_pid()
    else:  # a zombie: exited, not yet reaped (a job killed with its Snakemake); or a live writer
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0 if %r == 'zombie' else 30)" % owner])
        pid = child.pid
        if owner == "zombie":
            for _ in range(500):  # until it has exited (it stays a zombie: nobody waits for it yet)
                if Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z":
                    break
                time.sleep(0.02)
    stale = target.with_name(f"{target.name}.tmp-{pid}")
    stale.write_text("half")
    try:
        write_text_atomic(target, "done")
        assert target.read_text() == "done" and temporary_name(target).exists() is False
        assert stale.exists() is (owner == "alive")
    finally:
        if child is not None:
            child.kill()
            child.wait()
    assert remove_stale_temporaries(target) == ([stale] if owner == "alive" else [])


def test_jobs_import_the_checkouts_package_first(monkeypatch) -> None:
    from softref.workflow import use_package_from

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(["/other/site", str(REPO / "src")]))
    use_package_from(REPO / "src")
    assert os.environ["PYTHONPATH"].split(os.pathsep) == [str(REPO / "src"), "/other/site"]
    common = (REPO / "workflow" / "rules" / "common.smk").read_text()
    assert "use_package_from(SRC)" in common and '"PYTHONPATH"' in common


def test_the_demo_config_passes_the_preflight() -> None:
    """The control: the default config has no problem (the demo's data is written by the DAG)."""
    assert check_config(copy.deepcopy(demo_config()), base=REPO)[1] == []
