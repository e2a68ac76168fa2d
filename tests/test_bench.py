"""The GPU benchmark script parses, refuses unknown arguments, and guards every part with timeout;
every bench script starts and prints its help.

Running gpu.sh needs a GPU (or minutes of CPU at tiny sizes: ``bench/gpu.sh --tiny --device cpu``);
its checks cost well under a second. The scripts' starts share one interpreter (``_STARTER``).
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


#: Run in one child process: each bench script by path, as ``python bench/X.py --help`` would, with
#: softref's modules (and the scripts') imported afresh for each, so a script that lacks an import
#: fails here however the others ran. Third-party packages (torch, open_clip) are imported once,
#: which makes the whole check cost one interpreter start instead of one per script.
_STARTER = """
import contextlib, io, json, runpy, sys, traceback
bench, scripts = sys.argv[1], sys.argv[2:]
sys.path.insert(0, bench)
stems = {name[:-3] for name in scripts}
results = {}
for name in scripts:
    for module in [m for m in sys.modules if m == "softref" or m.startswith("softref.") or m in stems]:
        del sys.modules[module]
    out, err = io.StringIO(), io.StringIO()
    sys.argv = [bench + "/" + name, "--help"]
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_path(sys.argv[0], run_name="__main__")
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        except BaseException:
            traceback.print_exc()
            code = 1
    results[name] = {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue(),
                     "softref": getattr(sys.modules.get("softref"), "__file__", None)}
print(json.dumps(results))
"""

SCRIPTS = sorted(p.name for p in BENCH.glob("*.py"))


@pytest.fixture(scope="module")
def started() -> dict[str, dict]:
    """Each bench script's ``--help`` run: exit code, stdout, stderr and the softref it imported."""
    import json
    import os
    import sys

    src = str(BENCH.parent / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    done = subprocess.run([sys.executable, "-c", _STARTER, str(BENCH), *SCRIPTS], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_bench_script_starts(script: str, started: dict[str, dict]) -> None:
    """Each benchmark imports what it uses from softref and prints its help: a refactor that moves
    a function must move the benchmark's import with it."""
    result = started[script]
    assert result["code"] == 0, result["stderr"][-2000:]
    assert "usage:" in result["stdout"]
    assert result["softref"] is not None and Path(result["softref"]).is_relative_to(BENCH.parent / "src")


def test_a_script_that_lacks_an_import_fails_to_start(tmp_path: Path) -> None:
    """The one-process check above catches what a fresh ``python script.py --help`` would: softref's
    modules are imported afresh for each script, so one that uses a module another script imported,
    without importing it itself, fails."""
    import json
    import sys

    (tmp_path / "a.py").write_text("import argparse\nimport softref.evaluate.metrics\n"
                                   "argparse.ArgumentParser().parse_args()\n")
    (tmp_path / "b.py").write_text("import argparse\nimport softref\nsoftref.evaluate.metrics\n"
                                   "argparse.ArgumentParser().parse_args()\n")
    done = subprocess.run([sys.executable, "-c", _STARTER, str(tmp_path), "a.py", "b.py"], capture_output=True,
                          text=True, timeout=300)
    results = json.loads(done.stdout.splitlines()[-1])
    assert results["a.py"]["code"] == 0 and "usage:" in results["a.py"]["stdout"]
    assert results["b.py"]["code"] == 1 and "AttributeError" in results["b.py"]["stderr"]
