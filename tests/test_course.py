"""``pgqueue-lab course``, ``lab`` and ``check`` on real folders, notebooks and databases.

The course is copied from this checkout's notebooks (as an installed wheel copies its own);
tests/test_package.py does the same from a wheel in a fresh venv.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pgqueue_lab import __version__, check, cli, course

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"


def _run(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python -m pgqueue_lab ARGS`` in a subprocess (the database comes from the environment)."""
    result = subprocess.run(
        [sys.executable, "-m", "pgqueue_lab", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return result


def _course(dest: Path, *extra: str, capsys: pytest.CaptureFixture[str]) -> str:
    assert cli.main(["course", str(dest), *extra]) == 0
    return capsys.readouterr().out


def _edit_markdown(path: Path, text: str) -> None:
    nb = json.loads(path.read_text())
    nb["cells"].append({"cell_type": "markdown", "metadata": {}, "source": [text]})
    path.write_text(json.dumps(nb, indent=1))


def test_the_course_is_every_notebook_and_the_worker_scripts() -> None:
    assert course.source_dir() == NOTEBOOKS  # an editable install copies the checkout's folder
    expected = {p.name for p in NOTEBOOKS.glob("*.ipynb")} | {"07_worker_process.py", "07_seed_worker.py"}
    assert course.course_files() == sorted(expected)
    # Every file in the folder travels: another kind needs a pattern (course.COURSE_PATTERNS)
    # and package data (pyproject.toml), or the installed course would miss it.
    in_folder = {p.name for p in NOTEBOOKS.iterdir() if p.is_file() and not p.name.startswith(".")}
    assert in_folder == set(course.course_files())


def test_course_copies_everything_and_prints_the_next_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "my course"
    out = _course(dest, capsys=capsys)
    for name in course.course_files():
        assert (dest / name).read_bytes() == (NOTEBOOKS / name).read_bytes()
        assert f"added     {name}" in out
    assert f"pgqueue-lab {__version__} course in {dest}" in out
    last = out.strip().splitlines()[-1]
    assert last.startswith("Next: jupyter lab") and last.endswith(f"'{dest}'")  # quoted: a space
    assert _course(dest, capsys=capsys).count("added") == 0  # a second run: nothing to do


def test_a_second_run_keeps_the_learners_edit_reports_it_and_adds_what_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "course"
    _course(dest, capsys=capsys)
    edited, removed = dest / "03-claiming-with-threads.ipynb", dest / "05-final-status-with-pandas.ipynb"
    _edit_markdown(edited, "My notes: SKIP LOCKED skips, it does not wait.")
    mine = edited.read_bytes()
    removed.unlink()  # as if it were new in this version
    (dest / "my-own.ipynb").write_text("{}")  # the learner's own file: never touched

    out = _course(dest, capsys=capsys)
    assert edited.read_bytes() == mine, "the learner's edit was overwritten"
    assert "Kept your changes to 1 file(s)" in out and f"kept      {edited.name}" in out
    assert "--force" in out
    assert f"added     {removed.name}" in out
    assert removed.read_bytes() == (NOTEBOOKS / removed.name).read_bytes()
    assert (dest / "my-own.ipynb").read_text() == "{}"

    out = _course(dest, "--force", capsys=capsys)
    assert edited.read_bytes() == (NOTEBOOKS / edited.name).read_bytes()
    assert f"replaced  {edited.name}" in out and "overwritten (--force)" in out
    assert (dest / "my-own.ipynb").read_text() == "{}"


def test_a_notebook_the_learner_did_not_change_is_brought_up_to_this_version(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "course"
    _course(dest, capsys=capsys)
    # Make it look as an earlier version left it: other content, and the record says so.
    old = dest / "08-priorities-and-scheduling.ipynb"
    _edit_markdown(old, "(a cell an earlier version had)")
    manifest = json.loads((dest / course.MANIFEST).read_text())
    manifest["files"][old.name] = course._digest(old)
    (dest / course.MANIFEST).write_text(json.dumps(manifest))

    out = _course(dest, capsys=capsys)
    assert f"updated   {old.name}" in out and "kept" not in out
    assert old.read_bytes() == (NOTEBOOKS / old.name).read_bytes()


def test_a_differing_notebook_in_a_folder_without_record_counts_as_the_learners(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "00-start-here.ipynb").write_text('{"cells": []}')
    out = _course(tmp_path, capsys=capsys)
    assert "kept      00-start-here.ipynb" in out
    assert (tmp_path / "00-start-here.ipynb").read_text() == '{"cells": []}'


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["course", "{file}"], "exists and is not a folder"),
        (["check", "{missing}"], "no such file or folder"),
        (["check", "{file}"], "not a notebook (give .ipynb files or folders of them)"),
        (["check", "{empty}"], "no notebooks (*.ipynb) in this folder"),
        (["check", "{broken}"], "not a Jupyter notebook"),
        (["check", "--sanitize-with", "{missing}", "{notebook}"], "no such sanitiser file"),
        (["check"], "No course folder ./pgqueue-lab-course here"),
    ],
    ids=["course-file", "missing", "not-notebook", "empty-folder", "broken", "sanitizer", "no-default"],
)
def test_bad_input_is_one_clear_line_and_exit_2(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    paths = {
        "file": tmp_path / "notes.txt",
        "missing": tmp_path / "nowhere",
        "empty": tmp_path / "empty",
        "broken": tmp_path / "broken.ipynb",
        "notebook": NOTEBOOKS / "00-start-here.ipynb",
    }
    paths["file"].write_text("not a notebook")
    paths["empty"].mkdir()
    paths["broken"].write_text("{not json")
    monkeypatch.chdir(tmp_path)
    assert cli.main([a.format(**paths) for a in args]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("pgqueue-lab: error: ") and captured.err.count("\n") == 1
    assert message in captured.err


def test_bad_input_from_the_command_line_shows_no_traceback(tmp_path: Path) -> None:
    result = _run("check", "missing-folder", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == "pgqueue-lab: error: missing-folder: no such file or folder\n"


def test_version() -> None:
    result = _run("--version", cwd=ROOT)
    assert result.returncode == 0 and result.stdout == f"pgqueue-lab {__version__}\n"


def test_check_runs_with_the_same_options_as_the_tests() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    (addopts,) = re.findall(r'^addopts = "(.*)"$', pyproject, flags=re.MULTILINE)
    for option in check.NBVAL_OPTIONS:
        assert f" {option} " in f" {addopts} "
    assert f"--nbval-sanitize-with {check.SANITIZER.relative_to(ROOT).as_posix()}" in addopts
    assert f"--nbval-cell-timeout={check.DEFAULT_CELL_TIMEOUT}" in addopts
    args = check.pytest_args([NOTEBOOKS / "00-start-here.ipynb"])
    assert args[:2] == ["-c", str(check.PYTEST_INI)] and "pgqueue_lab.tools.pytest_plugin" in args


def test_check_fails_on_a_changed_output_and_names_the_cell(tmp_path: Path) -> None:
    """One notebook as stored passes; a copy with one stored output changed fails, at that cell."""
    folder = tmp_path / "teacher's course"
    folder.mkdir()
    source = NOTEBOOKS / "00-start-here.ipynb"
    (folder / source.name).write_bytes(source.read_bytes())
    nb = json.loads(source.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    changed = next(i for i, c in enumerate(code) if any(o.get("name") == "stdout" for o in c["outputs"]))
    stream = next(o for o in code[changed]["outputs"] if o.get("name") == "stdout")
    stream["text"] = ["the teacher changed this line\n"]
    (folder / "00-changed.ipynb").write_text(json.dumps(nb, indent=1))

    result = _run("check", str(folder), cwd=tmp_path)
    assert result.returncode == 1, result.stdout[-3000:]
    failed = [line for line in result.stdout.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1 and f"00-changed.ipynb::Cell {changed} " in failed[0]
    summary = f"00-changed.ipynb, Cell {changed} (code cell {changed + 1} from the top): Cell outputs differ"
    assert summary in result.stdout
    assert "the teacher changed this line" in result.stdout  # the diff is shown
    assert f"1 failed, {2 * len(code) - 1} passed" in result.stdout  # the stored copy passes
    assert "some cells differ" in result.stdout
    assert "\x1b[" not in result.stdout  # no colour codes in a log file
    assert not (folder / ".pytest_cache").exists()


def test_lab_copies_the_course_and_starts_jupyterlab(tmp_path: Path) -> None:
    result = _run("lab", "class", "--", "--version", cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Opening: jupyter lab --version" in result.stdout
    assert re.search(r"^\d+\.\d+\.\d+\S*$", result.stdout.strip().splitlines()[-1])  # its version
    assert sorted(p.name for p in (tmp_path / "class").iterdir() if not p.name.startswith(".")) == (
        course.course_files()
    )


def test_only_lab_and_check_take_arguments_after_double_dash(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["course", "x", "--", "--no-browser"])
    assert exc.value.code == 2
    assert "only lab and check take arguments after --" in capsys.readouterr().err
