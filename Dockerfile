# The consumer service: slim Python, non-root, WAL on a volume.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md requirements.lock ./
COPY walcore ./walcore
COPY consumer ./consumer
COPY config ./config
# With the librdkafka backend, every dependency at the version requirements.lock pins:
# the same image from the same commit (make lock regenerates the file).
RUN pip install --no-cache-dir -c requirements.lock '.[librdkafka]' \
    && useradd --system --uid 10001 --home-dir /var/lib/tidal tidal \
    && mkdir -p /var/lib/tidal/wal && chown -R tidal /var/lib/tidal

USER tidal
VOLUME ["/var/lib/tidal/wal"]
# /metrics, /healthz, /readyz (docs/operations.md)
ENV TIDAL_METRICS_PORT=9400 TIDAL_METRICS_HOST=0.0.0.0
EXPOSE 9400
ENTRYPOINT ["tidal-consumer", "run", "--config", "/app/config/consumer.toml"]
