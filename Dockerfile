# syntax=docker/dockerfile:1
#
# chatapp-consumer image.
#
#   docker build -t chatapp-consumer:dev .
#   docker run --rm -p 9400:9400 --env-file config/example.env chatapp-consumer:dev     # = run (fill in its placeholders)
#   docker run --rm chatapp-consumer:dev check-config --no-connect
#
# Stage "builder" builds the wheel and installs it with its dependencies into /opt/venv;
# the final stage copies only that venv onto a clean python:3.11-slim and runs as an
# unprivileged user. Every dependency ships manylinux wheels, so no compiler is needed
# anywhere; if one ever is, install it in the builder stage only.

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# README.m[d]: copied when present (pyproject names it as the long description), no error if not.
COPY pyproject.toml README.m[d] ./
# consumer/schemas is a symlink to ../schemas: COPY keeps it a symlink, so the target directory
# must be in the build context too. setuptools follows the link and puts the .avsc files into
# the wheel as consumer/schemas/*.avsc (package-data).
COPY schemas ./schemas
COPY consumer ./consumer

RUN pip wheel --no-deps --wheel-dir /wheels . \
 && pip install /wheels/chatapp_consumer-*.whl

# Check the installed package (not the source tree) has its schemas and its console script.
WORKDIR /
RUN python -c "import consumer.codec as c; assert (c.SCHEMA_DIR / 'send_request.avsc').is_file(), c.SCHEMA_DIR" \
 && chatapp-consumer --help > /dev/null

# ---------------------------------------------------------------------------------------------
# Stage "devkit": the builder's venv plus chatapp-devkit (devkit/: the local CAMS endpoint and
# sample traffic for deploy/docker-compose.yml). Built only as a named target
# (`docker build --target devkit`); the default image, "runtime" below, holds the service only.
FROM builder AS devkit
WORKDIR /src
COPY devkit ./devkit
RUN pip install ./devkit \
 && chatapp-devkit --help > /dev/null
WORKDIR /tmp
USER 10001:10001
ENTRYPOINT ["chatapp-devkit"]

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ARG APP_UID=10001
RUN groupadd --system --gid ${APP_UID} chatapp \
 && useradd --system --uid ${APP_UID} --gid ${APP_UID} --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin chatapp

COPY --from=builder /opt/venv /opt/venv
# The Avro schemas, also for operators (e.g. registering them in a Schema Registry by hand).
COPY schemas /usr/share/chatapp-consumer/schemas

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CHATAPP_LOG_FORMAT=json \
    CHATAPP_METRICS_HOST=0.0.0.0 \
    CHATAPP_METRICS_PORT=9400

LABEL org.opencontainers.image.title="chatapp-consumer" \
      org.opencontainers.image.description="Kafka consumer batching WhatsApp send requests into Alibaba Cloud CAMS SendChatappMassMessage calls"

# Nothing is written at run time: the image runs with a read-only root filesystem (/tmp may be
# a tmpfs for libraries that want one).
WORKDIR /tmp
USER ${APP_UID}:${APP_UID}

EXPOSE 9400

# Liveness: the main loop beats (no curl in slim: python's urllib). /healthz answers 503 when the
# loop stalls, which urlopen raises as an error -> exit 1.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('CHATAPP_METRICS_PORT', '9400'), timeout=4)"]

# Exec form: the service is PID 1 and gets SIGTERM itself (it drains for CHATAPP_DRAIN_TIMEOUT_S).
ENTRYPOINT ["chatapp-consumer"]
CMD ["run"]
