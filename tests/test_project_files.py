"""environment.yml, docker-compose.yml, pyproject.toml and the README agree with each other."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pgqueue_lab import db

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

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
    assert major == str(db._pg_major()), "compose should run the embedded server's major version"


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
