"""The package-index path, end to end: build, install the wheel in a fresh venv, copy, check.

Slow (a build, a venv with JupyterLab, every notebook): marked ``wheel``, so a plain ``pytest``
skips it; ``.ci/run`` runs it as a step of its own (``pytest -m wheel tests/test_package.py``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

from pgqueue_lab import __version__, course
from pgqueue_lab.tools.pytest_plugin import EMBEDDED_FLAG

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
SCRIPTS = ["07_seed_worker.py", "07_worker_process.py"]  # run by notebook 07

pytestmark = pytest.mark.wheel


def _run(cmd: list[str], *, cwd: Path, env: dict[str, str], timeout: float) -> str:
    start = time.monotonic()
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    took = time.monotonic() - start
    print(f"$ {' '.join(cmd)}   ({took:.0f} s, exit {result.returncode})")
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout[-5000:]}\n{result.stderr[-5000:]}"
    return result.stdout


def test_the_wheel_from_a_fresh_venv_copies_the_course_and_checks_it(tmp_path: Path) -> None:
    pytest.importorskip("build", reason="needs the dev extra (build, twine)")
    pytest.importorskip("twine", reason="needs the dev extra (build, twine)")
    # No checkout on the path: no PYTHONPATH, and every command runs outside the checkout.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    if os.environ.get(EMBEDDED_FLAG):
        # This run uses the embedded server: let the installed package find (and attach to) it
        # by itself, as a learner's would, rather than hand it this run's DSN.
        env.pop("PGQUEUE_LAB_DSN", None)

    dist = tmp_path / "dist"
    _run(
        [sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)], cwd=tmp_path, env=env, timeout=600
    )
    (wheel,) = dist.glob("pgqueue_lab-*.whl")
    (sdist,) = dist.glob("pgqueue_lab-*.tar.gz")
    assert wheel.name == f"pgqueue_lab-{__version__}-py3-none-any.whl"
    _run(
        [sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)],
        cwd=tmp_path,
        env=env,
        timeout=120,
    )

    with zipfile.ZipFile(wheel) as zf:
        in_wheel = set(zf.namelist())
    for name in [*NOTEBOOKS, *SCRIPTS]:
        assert f"pgqueue_lab/notebooks/{name}" in in_wheel
    for name in ("nbval-sanitize.cfg", "check-pytest.ini", "pytest_plugin.py", "course.py", "check.py"):
        assert f"pgqueue_lab/tools/{name}" in in_wheel
    with tarfile.open(sdist) as tf:
        in_sdist = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    for name in [*NOTEBOOKS, *SCRIPTS]:
        assert f"notebooks/{name}" in in_sdist
    for name in ("CHANGELOG.md", "conftest.py", "tests/conftest.py", "pgqueue_lab/tools/nbval-sanitize.cfg"):
        assert name in in_sdist

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path, env=env, timeout=120)
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    python, cli = bindir / "python", bindir / "pgqueue-lab"
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    _run([*pip, f"{wheel}[test]"], cwd=tmp_path, env=env, timeout=900)

    learner = tmp_path / "learner"
    learner.mkdir()
    where = _run(
        [str(python), "-c", "import pgqueue_lab; print(pgqueue_lab.__file__)"],
        cwd=learner,
        env=env,
        timeout=60,
    )
    assert Path(where.strip()).is_relative_to(venv), f"imported from {where.strip()}, not the wheel"
    assert (
        _run([str(cli), "--version"], cwd=learner, env=env, timeout=60).strip()
        == f"pgqueue-lab {__version__}"
    )

    out = _run([str(cli), "course"], cwd=learner, env=env, timeout=60)
    assert out.strip().splitlines()[-1].startswith("Next: jupyter lab")
    copied = learner / course.DEFAULT_DIR
    assert sorted(p.name for p in copied.iterdir() if not p.name.startswith(".")) == sorted(
        [*NOTEBOOKS, *SCRIPTS]
    )

    out = _run([str(cli), "check"], cwd=learner, env=env, timeout=900)
    assert f"all {len(NOTEBOOKS)} notebook(s) match their stored outputs" in out
    assert " failed" not in out
