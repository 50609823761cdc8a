# syntax=docker/dockerfile:1
#
# The whereabouts image: the plugin as one self-contained folder (no Python
# needed on the node) and the installer that the DaemonSet runs.
#
#   docker build -t whereabouts:0.1.0 .
#
# Without a registry, hack/image.sh makes the two base images locally
# (debootstrap, docker import) and passes them as BUILD_IMAGE and RUNTIME_IMAGE.
# A build image needs python3 (3.11) with venv and a shared libpython, and
# apt-get (for binutils) or binutils already installed.
#
# Stage 1 builds the folder with hack/build.sh (PyInstaller onedir) on Debian
# bullseye: the folder uses the node's glibc, so building on an older glibc
# (2.31) lets it run on more nodes (Debian 11+, Ubuntu 20.04+, RHEL 9+).
# Stage 2 is the runtime image: the folder laid out as for /opt/cni/bin, the
# installer as entrypoint, and `whereabouts` on PATH for the reconciler
# (doc/install/reconciler-*.yaml run `/opt/whereabouts/bin/whereabouts reconcile`).

ARG BUILD_IMAGE=python:3.11-slim-bullseye
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${BUILD_IMAGE} AS build
# binutils: PyInstaller strips the bundled libraries with `strip`.
RUN apt-get update \
 && apt-get install -y --no-install-recommends binutils \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.cfg README.md LICENSE ./
COPY doc/pypi.md ./doc/pypi.md
COPY whereabouts ./whereabouts
# A venv: Debian's own Python (a bookworm build image) refuses installs into the
# system interpreter (PEP 668); the official python images work either way.
RUN python3 -m venv /opt/build-venv \
 && /opt/build-venv/bin/python -m pip install --no-cache-dir '.[build]'
COPY hack/build.sh ./hack/build.sh
COPY hack/lib/common.sh ./hack/lib/common.sh
RUN PYTHON=/opt/build-venv/bin/python bash hack/build.sh --no-bench

FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="whereabouts" \
      org.opencontainers.image.description="Cluster-wide IPAM CNI plugin backed by the Kubernetes API" \
      org.opencontainers.image.licenses="Apache-2.0"
# .whereabouts/<id>/ and the symlink `whereabouts` -> .whereabouts/<id>/whereabouts
COPY --from=build /src/dist/cni-bin/ /opt/whereabouts/cni-bin/
COPY hack/install-cni.sh /opt/whereabouts/install-cni.sh
RUN mkdir -p /opt/whereabouts/bin \
 && ln -s ../cni-bin/whereabouts /opt/whereabouts/bin/whereabouts \
 && echo '{"cniVersion":"1.0.0"}' | CNI_COMMAND=VERSION /opt/whereabouts/bin/whereabouts
ENV PATH=/opt/whereabouts/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ENTRYPOINT ["/opt/whereabouts/install-cni.sh"]
