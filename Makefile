# Two commands do all the set-up on a fresh machine (see README.md):
#   make search   the main job: the rung search of TFG strengths on the bundled digits task
#   make test     ruff + the whole test suite (installs PostgreSQL from Debian's packages if missing)
# GPU users: make TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu124" search

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
SEARCH_ARGS ?= --task digits --target 3

.PHONY: search test lint venv

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

search: $(VENV)/.installed
	$(BIN)/tfg-search search $(SEARCH_ARGS)

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || command -v pg_ctl >/dev/null 2>&1 \
	  || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null)
	TFG_REQUIRE_POSTGRES=1 $(BIN)/python -m pytest -q
