# The two commands a user needs: `make dev` runs GoBuild, `make test` runs the tests.
# Both first run scripts/setup.sh, which installs what a fresh Debian machine lacks.

.PHONY: setup dev test test-fast lint format bench

setup:
	bash scripts/setup.sh

dev: setup
	.venv/bin/gobuild dev

test: setup
	.venv/bin/pytest

test-fast: setup
	.venv/bin/pytest --ignore=tests/e2e

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

format:
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .

bench: setup
	.venv/bin/python bench/webhook_to_live.py
