# syntax=docker/dockerfile:1
# One image serves, materializes and applies: `feature-platform serve|materialize|feast ENV`.
# Build: docker build -t feature-platform:dev .

# Both stages on the same pinned base, so the venv built in one runs in the other.
FROM python:3.11.14-slim-bookworm AS build
ARG UV_VERSION=0.13.9
# Bytecode compiled at build time: the root filesystem is read-only at run time.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install --no-cache-dir "uv==${UV_VERSION}"
WORKDIR /src
# Dependencies first, so a source change does not reinstall them.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-default-groups --no-install-project
COPY src ./src
RUN uv sync --frozen --no-default-groups --no-editable

FROM python:3.11.14-slim-bookworm
# A named user for libraries that look one up; the chart runs pods with the same ids.
RUN groupadd --gid 10001 app \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \
       --shell /usr/sbin/nologin app
WORKDIR /app
COPY --from=build /app/.venv /app/.venv
COPY feature_repo ./feature_repo
COPY ci/env ./ci/env
# Everything that wants to write goes to /tmp, the only writable path in the pod.
ENV PATH=/app/.venv/bin:$PATH \
    PLATFORM_ROOT=/app \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    XDG_CONFIG_HOME=/tmp/.config \
    MPLCONFIGDIR=/tmp/.config/matplotlib \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FEAST_USAGE=False
USER 10001:10001
# The feature server; the registry server (gRPC, REST); the offline server (Arrow Flight).
EXPOSE 6566 6570 6572 8815
ENTRYPOINT ["feature-platform"]
CMD ["--help"]
