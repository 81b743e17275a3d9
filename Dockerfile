# Sonolake image: one image, every role (gateway, sidecar, Dagster, MLflow) is its command.
# Build: docker build -t sonolake .   Compose: docker compose up (see docs/scaling.md).

# --- build: the locked environment, made by uv from uv.lock (no resolution at build time) ---
FROM python:3.11-slim-bookworm AS build
COPY --from=ghcr.io/astral-sh/uv:0.8 /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY . .
RUN uv sync --frozen --no-dev

# --- run: the environment and the code, as an unprivileged user ---
FROM python:3.11-slim-bookworm AS run
RUN apt-get update && apt-get install -y --no-install-recommends libsndfile1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 sonolake
COPY --from=build --chown=sonolake:sonolake /app /app
WORKDIR /app
ENV PATH=/app/.venv/bin:$PATH \
    SONOLAKE_STATE_DIR=/var/lib/sonolake \
    SONOLAKE_GATEWAY_HOST=0.0.0.0 \
    DAGSTER_HOME=/var/lib/sonolake/dagster
RUN mkdir -p /var/lib/sonolake && chown sonolake:sonolake /var/lib/sonolake
USER sonolake
EXPOSE 8765 9108 3000 5000
ENTRYPOINT ["sonolake"]
CMD ["gateway", "--port", "8765"]
