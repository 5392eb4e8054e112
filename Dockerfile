# One image for every GoBuild service; docker-compose.yml picks the module to run.
FROM python:3.12-slim
RUN apt-get update && apt-get install -y --no-install-recommends git ca-certificates \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY platform platform
COPY webhooks webhooks
COPY builder_agent builder_agent
COPY ui ui
COPY retention retention
RUN pip install --no-cache-dir .
ENV GOBUILD_BIND_HOST=0.0.0.0 GOBUILD_DATA_DIR=/var/lib/gobuild PYTHONUNBUFFERED=1
CMD ["python", "-m", "gobuild.platform.gateway"]
