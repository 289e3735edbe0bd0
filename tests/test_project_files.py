"""environment.yml, docker-compose.yml, pyproject.toml and the README agree with each other."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from pgqueue_lab import __version__, db, embedded

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~ ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_yml_installs_this_package_from_conda_forge(pyproject: dict[str, Any]) -> None:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    deps = env["dependencies"]
    pip_section = next(d for d in deps if isinstance(d, dict))["pip"]
    assert pip_section == ["-e .[test]"]  # the README's test extra, which includes the notebooks
    conda_names = {_name(d) for d in deps if isinstance(d, str)} - {"python", "pip"}
    wanted = {_name(r) for r in pyproject["project"]["dependencies"]}
    for extra in ("notebooks", "test"):
        wanted |= {_name(r) for r in pyproject["project"]["optional-dependencies"][extra]}
    assert conda_names <= wanted, f"conda installs what pyproject does not ask for: {conda_names - wanted}"
    python = next(d for d in deps if isinstance(d, str) and d.startswith("python="))
    minimum = pyproject["project"]["requires-python"].removeprefix(">=")
    assert tuple(map(int, python.split("=")[1].split("."))) >= tuple(map(int, minimum.split(".")))


def test_docker_compose_matches_the_readme_dsn() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    service = compose["services"]["postgres"]
    env = service["environment"]
    (port,) = service["ports"]
    host_ip, host_port, container_port = port.split(":")
    assert host_ip == "127.0.0.1" and container_port == "5432"
    assert "healthcheck" in service
    volume = service["volumes"][0].split(":")[0]
    assert volume in compose["volumes"]
    dsn = f"postgresql://{env['POSTGRES_USER']}:{env['POSTGRES_PASSWORD']}@127.0.0.1:{host_port}/{env['POSTGRES_DB']}"
    assert dsn == db.COMPOSE_DSN
    assert f"PGQUEUE_LAB_DSN={dsn}" in README
    major = service["image"].split(":")[1]
    assert major == str(embedded._pg_major()), "compose should run the embedded server's major version"


def test_readme_gives_the_two_commands_and_lists_every_notebook(pyproject: dict[str, Any]) -> None:
    assert 'pip install -e ".[notebooks]" && pgqueue-lab demo' in README
    assert 'pip install -e ".[test]" && pytest' in README
    assert "pgqueue-lab" in pyproject["project"]["scripts"]
    for notebook in sorted((ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb")):
        assert f"`{notebook.name}`" in README, f"README does not list {notebook.name}"


def test_ci_runs_the_readme_test_command_on_both_paths() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert "env -u PGQUEUE_LAB_DSN pytest" in ci
    assert "PGQUEUE_LAB_DSN=postgresql://postgres@127.0.0.1:5432/test pytest" in ci
    assert "bash .ci/multi-user" in ci  # a second Unix user's demo and notebook (issue 14)
    assert "\nactionlint .github/workflows/*.yml\n" in ci  # the workflow files (issue 15)
    assert "pytest -m wheel tests/test_package.py" in ci  # the package-index path (issue 15)


def test_readme_gives_the_package_index_path_in_two_commands() -> None:
    section = README.split("### Install from the package index", 1)[1].split("###", 1)[0]
    commands = re.search(r"```bash\n(.*?)```", section, flags=re.DOTALL)
    assert commands, "no commands in the package-index section"
    lines = [line.split("#")[0].strip() for line in commands.group(1).splitlines() if line.strip()]
    assert lines == ['pip install "pgqueue-lab[notebooks]"', "pgqueue-lab lab"]


def test_readme_renders_on_the_package_index() -> None:
    # The package index shows README.md alone: a relative link or image there leads nowhere.
    relative = re.findall(r"!?\[[^\]]*\]\((?!https?://|#)([^)]*)\)", README)
    assert not relative, f"links that break on the package index: {relative}"
    assert not re.search(r"<img\s[^>]*src=\"(?!https?://)", README)


def _readme_workflow() -> str:
    section = README.split("## Validate your own copy of the course in CI", 1)[1].split("\n## ", 1)[0]
    (workflow,) = re.findall(r"```yaml\n(.*?)```", section, flags=re.DOTALL)
    return str(workflow)


def test_readme_workflow_for_teachers_checks_the_course_with_this_version(tmp_path: Path) -> None:
    workflow = _readme_workflow()
    steps = yaml.safe_load(workflow)["jobs"]["notebooks"]["steps"]
    runs = [step["run"] for step in steps if "run" in step]
    assert runs == [f'pip install "pgqueue-lab[test]=={__version__}"', "pgqueue-lab check course/"]
    beside_python = str(Path(sys.executable).parent)  # the venv's bin, activated or not
    actionlint = shutil.which("actionlint", path=os.pathsep.join([beside_python, os.environ.get("PATH", "")]))
    if actionlint is None:
        pytest.skip("actionlint is not installed (the dev extra has it)")
    path = tmp_path / ".github" / "workflows" / "check-course.yml"
    path.parent.mkdir(parents=True)
    path.write_text(workflow)
    result = subprocess.run([actionlint, str(path)], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_version_lives_in_one_place(pyproject: dict[str, Any]) -> None:
    assert "version" not in pyproject["project"] and "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "pgqueue_lab._version.__version__"
    }
    changelog = (ROOT / "CHANGELOG.md").read_text()
    first = re.search(r"^## (\S+)", changelog, flags=re.MULTILINE)
    assert first and first.group(1) == __version__, "CHANGELOG.md's first entry is not this version"


def test_github_workflow_tests_both_systems_every_python_and_a_server(pyproject: dict[str, Any]) -> None:
    ci = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    jobs = ci["jobs"]
    matrix = jobs["embedded"]["strategy"]["matrix"]
    assert set(matrix["os"]) == {"ubuntu-latest", "macos-latest"}
    classified = [
        c.rsplit(" :: ", 1)[1]
        for c in pyproject["project"]["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    ]
    assert matrix["python"] == classified
    assert classified[0] == pyproject["project"]["requires-python"].removeprefix(">=")
    assert "PGQUEUE_LAB_DSN" not in str(jobs["embedded"])
    assert jobs["server"]["services"]["postgres"]["image"].startswith("postgres:")
    assert jobs["server"]["env"]["PGQUEUE_LAB_DSN"].startswith("postgresql://")
    run = "\n".join(str(step.get("run", "")) for job in jobs.values() for step in job["steps"])
    assert "pytest -m wheel tests/test_package.py" in run and "actionlint" in run


def test_docker_compose_serves_a_class_of_30() -> None:
    """README, "Teaching with pgqueue-lab": the compose server takes a class of 30 at the default
    connection limit (notebook 09's threads, notebook 10's processes), as classroom create checks."""
    from pgqueue_lab import classroom

    service = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["postgres"]
    command = service["command"]
    settings = dict(arg.split("=", 1) for arg in command[command.index("-c") + 1 :: 2])
    needed = 30 * classroom.DEFAULT_CONNECTION_LIMIT + 3 + classroom.TEACHER_CONNECTIONS
    assert int(settings["max_connections"]) >= needed


def test_readme_documents_the_sql_contract_verbatim() -> None:
    """Producers and consumers in other languages copy these statements from the README: they
    must be exactly the ones the helper runs."""
    from pgqueue_lab import sql

    for name in ("ENQUEUE", "CLAIM", "COMPLETE", "FAIL", "HEARTBEAT"):
        assert f"```sql\n{getattr(sql, name)}\n```" in README, f"README's {name} differs from sql.{name}"
    assert "claim_token = %(token)s" in README and "`<schema>_jobs`" in README
