# CNN Lab: `docker build -t cnnlab . && docker run --rm -p 8000:8000 cnnlab`, then open http://127.0.0.1:8000
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY . .
# The wheel carries templates/, static/ and the shipped data, so the source can go.
RUN pip install . && rm -rf /src \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin cnnlab

USER cnnlab
WORKDIR /home/cnnlab
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["cnnlab", "--host", "0.0.0.0", "--port", "8000"]
