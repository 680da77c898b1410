# syntax=docker/dockerfile:1
#
# One image for every service of the Karnak gateway (receiver, processor, dicom-sender, stow-sender,
# kheops-sharer, notifier, monitor, console).
#
# Why one image and not one per service:
# - one build: the shared library and every service package are built and installed together, once;
# - identical library versions everywhere: each service runs the very same karnak_dicom, karnak_shared,
#   pydantic, pika, pydicom and pynetdicom, so the messages and the configuration they exchange cannot drift apart;
# - the service is chosen by the command, not by the image: `karnak run receiver`, `karnak run processor`,
#   `karnak run dicom-sender`, ... (the services are found through their `karnak.services` entry points).
#   The compose service or the Kubernetes Deployment picks the command, and scales each service on its own;
# - one image to scan, sign, mirror into a hospital's registry and roll out, instead of six.
#
# The image has no ENTRYPOINT so that the command is the whole `karnak ...` command line, e.g.
#   docker run --rm -v $PWD/config/karnak.compose.yml:/etc/karnak/karnak.yml:ro IMAGE \
#       karnak run receiver --metrics-port 9101
# The configuration is not baked in: mount it at $KARNAK_CONFIG (a bind mount, or a ConfigMap on Kubernetes).

ARG PYTHON_IMAGE=python:3.11-slim

# --- builder: wheels of the gateway's packages and of all their dependencies --------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY libs/ libs/
COPY shared/ shared/
COPY services/ services/

# The local karnak-dicom and karnak-shared satisfy the services' dependencies on them; pip fetches the rest.
RUN pip wheel --wheel-dir /wheels \
        ./libs/dicom \
        ./libs/monitor \
        ./shared \
        ./services/receiver \
        ./services/processor \
        ./services/dicom-sender \
        ./services/stow-sender \
        ./services/kheops-sharer \
        ./services/notifier \
        ./services/monitor \
        ./services/console

# --- runtime: the wheels installed, nothing else ------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    KARNAK_CONFIG=/etc/karnak/karnak.yml

# The wheels are bind-mounted from the builder, so they take no layer of the final image.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels /wheels/*.whl \
    && python -c "import sys; from karnak_shared.cli import services; \
missing = {'receiver', 'processor', 'dicom-sender', 'stow-sender', 'kheops-sharer', 'notifier', 'monitor', 'console'} - set(services()); \
sys.exit(f'services missing from the image: {sorted(missing)}' if missing else 0)"

# Non-root user `karnak` (uid/gid 10001). The blob store directory belongs to it: a named volume mounted
# there starts as a copy of this directory, owner included, so every service can write to it.
# Its home, /var/lib/karnak, is the working directory (writable, e.g. for a relative SQLite path).
RUN groupadd --system --gid 10001 karnak \
    && useradd --system --uid 10001 --gid 10001 --no-log-init \
        --home-dir /var/lib/karnak --shell /usr/sbin/nologin karnak \
    && mkdir -p /var/lib/karnak/blobs /etc/karnak \
    && chown -R 10001:10001 /var/lib/karnak

WORKDIR /var/lib/karnak
# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001

# 11112: the receiver's DICOM listener; 9101-9107: /metrics, /healthz and /readyz of the receiver,
# processor, dicom-sender, stow-sender, kheops-sharer, notifier and monitor (as passed with --metrics-port);
# 8081: the console (its API, pages and ops endpoints on one port).
EXPOSE 11112 9101 9102 9103 9104 9105 9106 9107 8081

# Set KARNAK_METRICS_PORT to the port given with --metrics-port (compose does). The slim image has no
# curl: python's urllib fetches /healthz, and fails on a refused connection or any non-2xx answer.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=4)" \
        "http://127.0.0.1:${KARNAK_METRICS_PORT:-9100}/healthz" || exit 1

CMD ["karnak", "--help"]
