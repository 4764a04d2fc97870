# syntax=docker/dockerfile:1
#
# audit-ledger service image.
#
#   docker build -t audit-ledger .
#   docker run -p 8000:8000 \
#     -e AUDIT_LEDGER_DATABASE_URL='postgresql+psycopg://ledger_app:...@db/audit' \
#     -v audit-ledger-keys:/var/lib/audit-ledger/keys audit-ledger
#
# Key material never enters the image: keys/ is excluded by .dockerignore and mounted as a volume.

# --- build: a wheel of the package, without dev extras --------------------------------------
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# README.m[d] is a glob so that a checkout without README.md still builds (pyproject names it).
COPY pyproject.toml README.m[d] ./
COPY audit_ledger ./audit_ledger
RUN pip wheel --no-deps --wheel-dir /wheels .

# --- runtime ----------------------------------------------------------------------------------
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    AUDIT_LEDGER_KEYS_DIR=/var/lib/audit-ledger/keys \
    AUDIT_LEDGER_LOG_DIR=/var/lib/audit-ledger/logs \
    AUDIT_LEDGER_MIGRATIONS_DIR=/opt/audit-ledger/migrations
# AUDIT_LEDGER_DATABASE_URL is deliberately not set here: pass it at run time (it holds a
# password). Without it the service uses a SQLite file in the working directory.

RUN groupadd --system --gid 10001 ledger \
    && useradd --system --uid 10001 --gid ledger --no-create-home \
        --home-dir /var/lib/audit-ledger --shell /usr/sbin/nologin ledger

COPY --from=build /wheels /wheels
RUN pip install /wheels/*.whl && rm -rf /wheels

# Database migrations (Alembic) live outside the package; read-only for the service user.
#   docker run --rm -e AUDIT_LEDGER_DATABASE_URL=... audit-ledger audit-ledger db upgrade
COPY alembic.ini /opt/audit-ledger/alembic.ini
COPY migrations /opt/audit-ledger/migrations

# Writable state only here: keys (volume), logs and the default SQLite file.
RUN install -d -o ledger -g ledger -m 0700 /var/lib/audit-ledger /var/lib/audit-ledger/keys \
    && install -d -o ledger -g ledger -m 0750 /var/lib/audit-ledger/logs
WORKDIR /var/lib/audit-ledger
VOLUME ["/var/lib/audit-ledger/keys"]

USER 10001:10001
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

CMD ["audit-ledger", "serve", "--host", "0.0.0.0", "--port", "8000"]
