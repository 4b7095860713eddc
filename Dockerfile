# syntax=docker/dockerfile:1
# The Anubis user-code image: one image for every process of the production topology.
#
#   docker build -t anubis:dev .                     (from the repository root; production)
#   docker build --target demo -t anubis:demo .      (plus the sandboxes, sink and demo orders)
#   docker build --target k8s -t anubis:k8s .        (plus dagster-k8s, dagster-aws: Helm chart)
#
# Default command: the gRPC code server on :4000, which the webserver and the daemon load the
# code from (deploy/postgres/workspace.yaml) and which launches the run workers. The same image
# runs `dagster-daemon run`, `dagster-webserver` and one-shot commands (`anubis db upgrade`); the
# `demo` target adds the IES sandboxes, the webhook sink and the demo order generator
# (`anubis-sandbox ...`, package anubis_sandboxes): see deploy/docker-compose.yml.
# The Dagster instance baked in is the production one (PostgreSQL from DAGSTER_PG_* variables);
# no secret is baked in: they all come from the environment at run time.

ARG PYTHON_VERSION=3.11

# --- build: wheels of the package and its pinned dependencies (no dev extra) -------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml setup.cfg README.md ./
COPY anubis_dagster ./anubis_dagster
RUN pip wheel --wheel-dir /wheels .
# the Kubernetes variant's extra (dagster-k8s, dagster-aws: pyproject.toml's `k8s` extra, pinned)
RUN pip wheel --wheel-dir /k8s-wheels --find-links /wheels ".[k8s]"
# the stand-ins (sandboxes, sink, demo world): only the demo target installs them
COPY sandboxes ./sandboxes
RUN pip wheel --no-deps --wheel-dir /demo-wheels ./sandboxes

# --- production: the user code and nothing else -------------------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS production
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    DAGSTER_COMPUTE_LOGS_DIR=/opt/dagster/compute_logs \
    ANUBIS_HOME=/opt/anubis/data
# tini as PID 1: the code server forks run workers, and a container's PID 1 must reap them and
# pass SIGTERM on, or a stopped container leaves zombies and runs that never hear the signal.
# (Debian's own tini of this release: pinning its exact version would break on security updates.)
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /wheels
# no index: exactly the wheels built above, whose versions pyproject.toml pins
# hadolint ignore=DL3013
RUN pip install --no-index --find-links=/wheels anubis_dagster && rm -rf /wheels
# The production instance and the workspace that loads the code from the gRPC code server.
COPY deploy/postgres/dagster.yaml deploy/postgres/workspace.yaml ${DAGSTER_HOME}/
RUN groupadd --gid 10001 anubis \
    && useradd --create-home --uid 10001 --gid 10001 anubis \
    && mkdir -p "${ANUBIS_HOME}" "${DAGSTER_COMPUTE_LOGS_DIR}" \
    && chown -R anubis:anubis "${DAGSTER_HOME}" "${ANUBIS_HOME}" "${DAGSTER_COMPUTE_LOGS_DIR}"
# numeric, so Kubernetes can enforce runAsNonRoot
USER 10001:10001
WORKDIR /opt/anubis
EXPOSE 4000
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["dagster", "api", "grpc", "-m", "anubis_dagster.definitions", "-h", "0.0.0.0", "-p", "4000"]

# --- demo: production plus the sandboxes, for deploy/docker-compose.yml -------------------------
FROM production AS demo
COPY --from=build /demo-wheels /demo-wheels
USER root
# hadolint ignore=DL3013
RUN pip install --no-index --no-deps /demo-wheels/*.whl && rm -rf /demo-wheels
USER 10001:10001

# --- k8s: production plus dagster-k8s and dagster-aws, for the Helm chart's run pods -----------
# Dagster's Helm guide asks user-code images for dagster-k8s (run pods load the run launcher's
# module), and the chart's S3ComputeLogManager needs dagster-aws where runs write their output.
# A variant, so the compose and laptop images stay without the Kubernetes client and boto3.
FROM production AS k8s
COPY --from=build /k8s-wheels /k8s-wheels
USER root
# hadolint ignore=DL3013
RUN pip install --no-index --find-links=/k8s-wheels "anubis_dagster[k8s]" && rm -rf /k8s-wheels
USER 10001:10001

# --- the default target (last stage): production -----------------------------------------------
FROM production AS release
