# syntax=docker/dockerfile:1
# The MFA service image: `mfa serve` by default, `mfa worker` for the projections.
# Build context: only pyproject.toml, README.md and src/ (see .dockerignore).

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /build
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY src ./src
# A regular (non-editable) install without the dev extras.
RUN /opt/venv/bin/pip install .

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MFA_DATA_DIR=/var/lib/mfa
RUN groupadd --system --gid 10001 mfa \
    && useradd --system --uid 10001 --gid mfa --home-dir /var/lib/mfa --no-create-home \
       --shell /usr/sbin/nologin mfa \
    && mkdir -p /var/lib/mfa \
    && chown mfa:mfa /var/lib/mfa
COPY --from=build /opt/venv /opt/venv
WORKDIR /var/lib/mfa
# Numeric, so that orchestrators can check "runs as non-root" without reading /etc/passwd.
USER 10001:10001
EXPOSE 8000
# Liveness of `mfa serve`. `mfa worker` has no HTTP port: compose.yaml overrides this for it.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2)"]
CMD ["mfa", "serve", "--host", "0.0.0.0"]
