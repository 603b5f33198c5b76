# One image for every StreamFlow process of docker-compose.yml: the Dagster code server, webserver
# and daemon, the MLflow tracking server and the churn API. Built with uv from the committed lock.
FROM python:3.11-slim-bookworm

COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /uvx /bin/

ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    PYTHONUNBUFFERED=1

WORKDIR /app

# Dependencies first, in their own layer: it is rebuilt only when the lock changes.
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --frozen --no-dev --no-install-project

COPY pyproject.toml uv.lock README.md workspace.yaml dagster.yaml dagster.postgres.yaml ./
COPY streamflow ./streamflow
COPY streamflow_assets ./streamflow_assets
COPY serving ./serving
COPY feature_repo ./feature_repo
COPY deploy/workspace.compose.yaml ./deploy/workspace.compose.yaml
# Installed in place (editable), so the code finds feature_repo/ and the yaml files beside it;
# compiled now, because the unprivileged user cannot write bytecode next to the sources.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev \
    && /app/.venv/bin/python -m compileall -q streamflow streamflow_assets serving

# Every process runs as an unprivileged user. The directories that become named volumes are
# created here with that owner, so Docker initialises the volumes writable by it.
RUN useradd --system --uid 10001 --create-home --home-dir /home/streamflow streamflow \
    && mkdir -p /data /mlartifacts /opt/dagster/home/storage \
    && cp dagster.postgres.yaml /opt/dagster/home/dagster.yaml \
    && chown -R streamflow:streamflow /data /mlartifacts /opt/dagster/home

ENV PATH=/app/.venv/bin:$PATH \
    DAGSTER_HOME=/opt/dagster/home \
    STREAMFLOW_PROFILE=postgres \
    STREAMFLOW_DATA_DIR=/data

USER streamflow

EXPOSE 3000 4000 5000 8000

CMD ["streamflow", "serve", "--host", "0.0.0.0", "--port", "8000"]
