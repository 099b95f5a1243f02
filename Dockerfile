# syntax=docker/dockerfile:1
# fraudstream worker image.
#
#   docker build -t fraudstream:local .
#   docker run --rm fraudstream:local --help
#
# Two stages: the builder turns the project and all its dependencies into wheels, so the runtime
# stage installs them offline and carries no build tools, pip cache or source tree.

FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# README.m[d]: pyproject.toml names README.md as the readme, but the build must not fail while the
# file does not exist yet (an empty wildcard match is allowed, a missing literal path is not).
COPY pyproject.toml setup.py README.m[d] ./
COPY stream ./stream
COPY features ./features
COPY online_models ./online_models

# The feature engine's kernel is C (Cython): the builder gets a C compiler, the runtime stage only
# the compiled wheel. --prefer-binary: confluent-kafka, rocksdict, orjson and river ship manylinux
# wheels; building any of them from source would need more compilers (and Rust).
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
RUN pip wheel --prefer-binary --wheel-dir /wheels .


FROM python:3.11-slim AS runtime

# GLIBC_TUNABLES: malloc asks for transparent huge pages for its heap and large blocks
# (madvise; the hosts' default THP mode). A worker's feature state is millions of small C
# blocks and dicts of millions of entries, read at random: with 4 KB pages nearly every access
# also misses the TLB (docs/benchmarks.md, "Prefetch, point reads, huge pages").
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FRAUDSTREAM_STATE_DIR=/var/lib/fraudstream/state \
    FRAUDSTREAM_METRICS_HOST=0.0.0.0

# A fixed uid/gid so volume ownership is predictable across rebuilds and hosts.
RUN groupadd --system --gid 10001 fraudstream \
 && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin fraudstream \
 && mkdir -p /app /var/lib/fraudstream/state \
 && chown -R fraudstream:fraudstream /app /var/lib/fraudstream

# Bind-mount the wheels instead of COPYing them, so they never become a layer of the final image.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels fraudstream

WORKDIR /app
# Declared after the chown above: a fresh named volume is seeded with this ownership.
VOLUME ["/var/lib/fraudstream"]

# Prometheus metrics and health endpoints of the worker and trainer (stream/metrics_names.py):
# /metrics, /healthz (liveness), /readyz (state restored). Bound to 0.0.0.0 above, since the
# settings default of 127.0.0.1 is unreachable from outside the container.
EXPOSE 9400

# Numeric so orchestrators (Kubernetes runAsNonRoot) can verify it is not root; 10001 is the
# fraudstream user created above.
USER 10001:10001

# Image-wide check: proves the interpreter, the installed package and its CLI load. It stays this
# generic because the same image also runs one-shot commands (topics create, replay) that serve no
# HTTP endpoint; the long-running services (Compose worker/trainer, Kubernetes probes) probe
# /healthz and /readyz on port 9400 instead.
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 \
    CMD ["fraudstream", "--version"]

ENTRYPOINT ["fraudstream"]
CMD ["worker"]
