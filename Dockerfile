# factory-gateway on an edge box: a slim Python image, a non-root user, the device map mounted
# at /config/gateway.yaml, the durable buffer under /data (the maps read BUFFER_PATH).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    BUFFER_PATH=/data/buffer

WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY adapters ./adapters
COPY simulators ./simulators
COPY configs ./configs
RUN pip install '.[fast]' \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin gateway \
    && mkdir -p /config /data \
    && cp configs/example.yaml /config/gateway.yaml \
    && chown -R gateway /data

USER gateway
VOLUME ["/data"]
# /healthz of the map's http listener (default 127.0.0.1:9108, inside the container).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import ssl, urllib.request as u\ntry: u.urlopen('http://127.0.0.1:9108/healthz', timeout=4)\nexcept OSError: u.urlopen('https://127.0.0.1:9108/healthz', timeout=4, context=ssl._create_unverified_context())"]
ENTRYPOINT ["factory-gateway"]
CMD ["run", "/config/gateway.yaml"]
