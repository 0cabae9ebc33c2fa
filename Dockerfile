# CNN Lab: `docker build -t cnnlab . && docker run --rm -p 8000:8000 cnnlab`, then open http://127.0.0.1:8000
# (podman: add `--format docker` to the build, or the OCI format drops the HEALTHCHECK).
# The same image runs a training worker: `cnnlab worker` as the command (compose.yaml, and the
# README's "Running for a whole course").
# scripts/container_check.sh builds and runs this file without any registry and checks it serves.

# Stage 1: the README's `pip install .`, into /install (the wheel carries templates/, static/,
# the locale catalogs and the shipped datasets). Its source and pip's build tools stay here.
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY . .
RUN pip install --no-cache-dir --prefix=/install .

# Stage 2: the base image plus the installed packages, nothing else.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /install /usr/local
# uploads/: where compose.yaml mounts the uploads volume the web processes share (a new volume
# takes this folder's owner, so the server can write to it).
RUN useradd --create-home --uid 10001 --user-group --shell /usr/sbin/nologin cnnlab \
    && install -d -o 10001 -g 10001 -m 0700 /home/cnnlab/uploads

# Numeric, so a runtime can tell the user is not root without reading /etc/passwd.
USER 10001
WORKDIR /home/cnnlab
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
# The README's `cnnlab`, listening on every interface of the container.
CMD ["cnnlab", "--host", "0.0.0.0", "--port", "8000"]
