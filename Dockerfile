# odradek: a Kafka-compatible broker. Build: docker build -t odradek:0.1.0 .
# Stage 1 builds the wheel; stage 2 installs only the wheel into a slim runtime.
FROM python:3.11-slim AS builder
WORKDIR /src
RUN pip install --no-cache-dir build==1.2.2
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m build --wheel --outdir /dist .

FROM python:3.11-slim
LABEL org.opencontainers.image.title="odradek" \
      org.opencontainers.image.description="A Kafka-compatible streaming platform in Python" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ODRADEK_LISTEN=0.0.0.0:9092 \
    ODRADEK_DATA_DIR=/var/lib/odradek
COPY --from=builder /dist/*.whl /tmp/
RUN pip install --no-cache-dir /tmp/*.whl \
    && rm -f /tmp/*.whl \
    && groupadd --system --gid 10001 odradek \
    && useradd --system --uid 10001 --gid odradek --home-dir /var/lib/odradek --shell /usr/sbin/nologin odradek \
    && mkdir -p /var/lib/odradek \
    && chown odradek:odradek /var/lib/odradek
USER 10001:10001
WORKDIR /var/lib/odradek
VOLUME ["/var/lib/odradek"]
EXPOSE 9092
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["odradek", "health", "-b", "127.0.0.1:9092", "--timeout", "2"]
ENTRYPOINT ["odradek", "serve"]
