# One command for each routine job. Run inside the project's virtualenv.
PY ?= python

.PHONY: install demo lab test test-server check package exercises notebooks bench mutate lint format typecheck ci

install:            ## install the package with everything a contributor needs
	$(PY) -m pip install -e ".[dev]"

demo:               ## the seed's walk-through on the embedded database (or PGQUEUE_LAB_DSN)
	pgqueue-lab demo

lab:                ## open the course in JupyterLab
	jupyter lab notebooks/

test:               ## tests + every notebook under strict nbval
	$(PY) -m pytest

test-server:        ## the same against the local PostgreSQL server
	PGQUEUE_LAB_DSN=postgresql://postgres@127.0.0.1:5432/test $(PY) -m pytest

check:              ## the notebooks as `pgqueue-lab check` runs a teacher's copy (strict nbval)
	pgqueue-lab check notebooks

package:            ## build, twine check, install the wheel in a fresh venv, copy and check the course
	$(PY) -m pytest -m wheel tests/test_package.py

exercises:          ## every exercise's folded solution passes its check (each notebook run again)
	$(PY) -m pytest -m exercises tests/test_exercises.py

notebooks:          ## re-execute every notebook and store its outputs (after changing one)
	$(PY) scripts/refresh_notebooks.py

bench:              ## the benchmark: every figure beside its same-run baseline
	pgqueue-lab bench --csv bench-results.csv

mutate:             ## mutation run: each named way of breaking the queue must fail its tests
	$(PY) scripts/mutate.py

lint:               ## ruff lint + format check (notebooks included), workflow files
	ruff check . && ruff format --check . && actionlint .github/workflows/*.yml

format:             ## apply ruff's fixes and formatting
	ruff check --fix . && ruff format .

typecheck:          ## mypy on the helper module
	mypy

ci:                 ## what CI runs
	bash .ci/run
