# StreamFlow: `make demo` sets everything up and runs the pipeline; `make test` runs the tests.
PYTHON ?= python3
UV ?= $(shell command -v uv 2>/dev/null || echo .uv/bin/uv)
SEEDS_DIR ?=
# `make stack PROFILE=cluster`: the stack of another profile (default postgres).
PROFILE ?=
SF := .venv/bin/streamflow
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := .venv

.PHONY: install demo serve test lint format docs pipeline dev mlflow stack stack-down

install: .venv/.installed

# uv is bootstrapped into .uv/ with the machine's own Python when it is not on PATH.
.uv/bin/uv:
	$(PYTHON) -m venv .uv && .uv/bin/pip install --quiet uv

# Bytecode compiled at install: where PYTHONDONTWRITEBYTECODE is set (as on these machines), every
# process would otherwise compile its imports from source, Evidently's 13 s instead of 6.5 s.
# Quiet, then one line: what was installed, and how long it took (the compile is most of it).
.venv/.installed: pyproject.toml uv.lock | $(UV)
	@echo "installing uv.lock into .venv and compiling its bytecode (1-2 min the first time)"; started=$$(date +%s); $(UV) sync --quiet --frozen --compile-bytecode --python $(PYTHON) && touch $@ && echo "installed $$(ls -d .venv/lib/python3*/site-packages/*.dist-info | wc -l) packages into .venv in $$(( $$(date +%s) - started ))s"

# Generate, run the months, serve, promote, hot-reload, monitor (streamflow/ops/demo.py).
demo: install
	$(SF) demo $(if $(SEEDS_DIR),--seeds $(SEEDS_DIR))

serve: install
	$(SF) serve

pipeline: install
	$(SF) pipeline

# The Dagster UI (with the daemon) on 127.0.0.1:3000, over the instance `streamflow` writes to.
dev: install
	$(SF) dagster-dev

# The MLflow UI on 127.0.0.1:5000, over the local profile's tracking database.
mlflow: install
	.venv/bin/mlflow ui --host 127.0.0.1 --port 5000 --backend-store-uri sqlite:///$$(realpath $${STREAMFLOW_DATA_DIR:-var})/mlflow/mlflow.db

# Two xdist workers, a test file each at a time (its module fixtures built once), the slowest
# files first (tests/conftest.py). TEST_WORKERS=0 runs everything in this process.
TEST_WORKERS ?= 2
test: install
	.venv/bin/pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

lint: install
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/lint-imports

format: install
	.venv/bin/ruff format . && .venv/bin/ruff check --fix .

# The documentation site (MkDocs Material) into site/; any warning fails the build (Material's
# notice about its successor is not one).
docs: install
	NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict

# The docker compose services started natively (PostgreSQL, MLflow, Dagster webserver + daemon,
# API; with PROFILE=cluster also RabbitMQ, Redis and two celery workers) under supervisord; its
# config, socket and logs under $$STREAMFLOW_DATA_DIR/stack/ (default var/stack/).
stack: install
	$(if $(PROFILE),STREAMFLOW_PROFILE=$(PROFILE)) .venv/bin/python -m streamflow.ops.stack up

stack-down:
	$(if $(PROFILE),STREAMFLOW_PROFILE=$(PROFILE)) .venv/bin/python -m streamflow.ops.stack down
