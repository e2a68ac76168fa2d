"""The GPU benchmark script parses, refuses unknown arguments, and guards every part with timeout.

Running it needs a GPU (or minutes of CPU at tiny sizes: ``bench/gpu.sh --tiny --device cpu``);
these checks cost well under a second.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
SCRIPT = BENCH / "gpu.sh"
BASH = shutil.which("bash")

pytestmark = pytest.mark.skipif(BASH is None, reason="bash is not installed")


def test_gpu_script_parses() -> None:
    subprocess.run([BASH, "-n", str(SCRIPT)], check=True)


def test_gpu_script_refuses_an_unknown_argument() -> None:
    done = subprocess.run([BASH, str(SCRIPT), "--no-such-flag"], capture_output=True, text=True)
    assert done.returncode == 2 and "unknown argument '--no-such-flag'" in done.stderr


def test_every_part_runs_under_timeout_and_names_an_existing_helper() -> None:
    text = SCRIPT.read_text()
    parts = re.findall(r'^part "(\([a-d]\))[^"]*" (\d+) "\$PY" (bench/\S+\.py)', text, flags=re.MULTILINE)
    assert [label for label, _, _ in parts] == ["(a)", "(b)", "(c)", "(d)"]
    assert all((BENCH.parent / helper).is_file() for _, _, helper in parts)
    # The parts' limits (plus each one's grace before the kill) fit the 8 minutes.
    assert sum(int(limit) for _, limit, _ in parts) + 4 * 5 < 8 * 60
    assert 'timeout --kill-after="$KILL_AFTER" "$limit" "$@"' in text


@pytest.mark.parametrize("script", sorted(p.name for p in BENCH.glob("*.py")))
def test_every_bench_script_starts(script: str) -> None:
    """Each benchmark imports what it uses from softref and prints its help: a refactor that moves
    a function must move the benchmark's import with it."""
    import os
    import sys

    src = str(BENCH.parent / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    done = subprocess.run([sys.executable, str(BENCH / script), "--help"], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout
