# A gateway agent (`creamfl-agent run`): slim Python, CPU-only torch from the PyTorch CPU index, and the
# package with the agent extra only (no FastAPI, SQLAlchemy, database drivers or transformers). Every
# dependency is installed from a wheel (--only-binary=:all:): nothing is compiled, so the same file builds
# on amd64 and arm64 (docker buildx build --platform linux/amd64,linux/arm64 ...).
#
# Two stages: the first builds the package's wheel from the repository, the second installs that wheel,
# so the image runs what `pip install creamfl[agent]` would, with no source tree beside it.
#
# Build from the repository root: docker build -f docker/agent.Dockerfile -t creamfl-agent .
# Run: docker run creamfl-agent run --coordinator http://HOST:8080 --federation FED --join-token JOIN \
#          --modality image --data builtin:0:0/6 --model image-cnn-s
ARG PYTHON_IMAGE=python:3.11-slim

# The same wheel as the coordinator image's (one package, four top-level modules); the agent extra decides
# what gets installed with it.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY creamfl ./creamfl
COPY shared_schemas ./shared_schemas
COPY coordinator_service ./coordinator_service
COPY client_agent ./client_agent
RUN pip wheel --no-deps -w /dist .

FROM ${PYTHON_IMAGE}

# The Makefile's pin (TORCH_SPEC); any torch>=2.3,<3 works.
ARG TORCH_VERSION=2.13.0
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Torch first, from the CPU index: the wheel's torch requirement is then met and PyPI's CUDA build never pulled.
RUN pip install --only-binary=:all: --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}"

COPY --from=build /dist /tmp/dist
RUN pip install --only-binary=:all: "$(ls /tmp/dist/creamfl-*.whl)[agent]" \
    && rm -rf /tmp/dist \
    && useradd --system --uid 10001 --create-home --home-dir /var/lib/creamfl-agent creamfl

USER creamfl
ENV CREAMFL_AGENT_STATE_DIR=/var/lib/creamfl-agent \
    CREAMFL_AGENT_DEVICE=cpu \
    CREAMFL_AGENT_PROGRESS=plain
VOLUME ["/var/lib/creamfl-agent"]
ENTRYPOINT ["creamfl-agent"]
CMD ["run", "--help"]
