# The coordinator: `creamfl-coordinator serve` (API + one in-process job worker), and the same image runs
# `creamfl-coordinator worker` (more job workers) and `creamfl-coordinator demo` (the scenario driver).
#
# CUDA-capable: the base image ships torch built for CUDA, so jobs run on the GPU when one is visible
# (CREAMFL_DEVICE=auto; `docker run --gpus all ...`) and on the CPU otherwise.
# PostgreSQL-ready: set CREAMFL_DATABASE_URL=postgresql+psycopg://USER:PASSWORD@HOST/DB (psycopg's binary
# wheel comes with the coordinator extra) and run `creamfl-coordinator migrate` once; without it the
# embedded SQLite lives in CREAMFL_DATA_DIR.
#
# Two stages: the first builds the package's wheel from the repository, the second installs that wheel,
# so the image runs what `pip install creamfl[coordinator]` would, with no source tree beside it (the
# Alembic scripts and the dashboard's files are inside the package).
#
# Build from the repository root: docker build -f docker/coordinator.Dockerfile -t creamfl-coordinator .
ARG BASE_IMAGE=pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

# The wheel is pure Python: the runtime base builds it, so no second image is pulled.
FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY creamfl ./creamfl
COPY shared_schemas ./shared_schemas
COPY coordinator_service ./coordinator_service
COPY client_agent ./client_agent
RUN pip wheel --no-deps -w /dist .

FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The base image's CUDA torch satisfies the torch requirement and is kept. The agent extra adds httpx,
# which the `demo` driver needs.
COPY --from=build /dist /tmp/dist
RUN pip install "$(ls /tmp/dist/creamfl-*.whl)[coordinator,agent]" \
    && rm -rf /tmp/dist \
    && useradd --system --uid 10001 --create-home --home-dir /var/lib/creamfl creamfl \
    && mkdir -p /var/lib/creamfl/artifacts /var/lib/creamfl/runs /var/lib/creamfl/handoff \
    && chown -R creamfl /var/lib/creamfl

USER creamfl
ENV CREAMFL_DATA_DIR=/var/lib/creamfl \
    CREAMFL_ARTIFACT_DIR=/var/lib/creamfl/artifacts \
    CREAMFL_DEVICE=auto
VOLUME ["/var/lib/creamfl"]
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=4).status != 200)"]
CMD ["creamfl-coordinator", "serve", "--host", "0.0.0.0", "--port", "8080"]
