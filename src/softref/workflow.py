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

log = logging.getLogger("softref")


@contextlib.contextmanager
def rule_context(smk: Any) -> Iterator[Config]:
    """Send logging and stderr to the rule's log file, set threads, yield the typed config.

    An exception is logged with its traceback (so the log explains the failure) and re-raised,
    which makes Snakemake delete the rule's outputs.
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
