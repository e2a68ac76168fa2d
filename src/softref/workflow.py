"""Glue for the Snakemake scripts: logging into the rule's log file and the typed config.

Each script under ``workflow/scripts/`` reads the ``snakemake`` object, enters
:func:`rule_context` and calls one package function; everything else lives in the package.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Any, Iterator

from softref.config import Config, load_config
from softref.runtime import prepend_path

log = logging.getLogger("softref")


@contextlib.contextmanager
def rule_context(smk: Any, *, torch_threads: bool = True) -> Iterator[Config]:
    """Send logging and stderr to the rule's log file, set threads, yield the typed config.

    An exception is logged with its traceback (so the log explains the failure) and re-raised,
    which makes Snakemake delete the rule's outputs. ``torch_threads=False`` leaves torch alone: a
    rule that never uses it (the figures) does not pay for importing it.
    """
    log_path = Path(smk.log[0]) if smk.log else None
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    stream = None
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        stream = open(log_path, "w", buffering=1)
        sys.stderr = stream
        handlers = [logging.StreamHandler(stream)]
    logging.basicConfig(
        level=os.environ.get("SOFTREF_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    threads = int(getattr(smk, "threads", 1) or 1)
    try:
        if torch_threads:
            import torch

            torch.set_num_threads(threads)
    except ImportError:  # rules that do not need torch
        pass
    try:
        yield load_config(smk.config)
    except Exception:
        log.exception("rule %s failed", getattr(smk, "rule", "?"))
        raise
    finally:
        if stream is not None:
            stream.flush()


def use_package_from(src: str | Path) -> None:
    """Put ``src`` (the folder holding the checkout's ``softref``) first on this process's
    ``PYTHONPATH``, so every job started from here, and every torchrun child of a job, imports the
    checkout's package rather than another installed copy."""
    os.environ["PYTHONPATH"] = prepend_path(os.environ.get("PYTHONPATH"), str(src))


def write_config(config: Any, path: Path) -> Path:
    """Write the run's effective config (what Snakemake merged and validated) as YAML, atomically.

    The torchrun processes of a multi-GPU train job read it, so they train exactly what the
    DAG planned; ``python -m softref.train --config`` accepts it like any config file.
    """
    import yaml

    from softref.files import write_text_atomic

    return write_text_atomic(path, yaml.safe_dump(_plain(config), sort_keys=True))


def _plain(value: Any) -> Any:
    """Snakemake's config mapping (and its nested mappings) as plain dicts and lists."""
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
