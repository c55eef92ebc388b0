# Worker image: `docker build -t catalog-etl-worker .` (used by docker-compose.yml).
# It holds both binaries: `etl-worker` (the entrypoint) and `etlctl` (the compose `setup` and
# `etlctl` services run it with `--entrypoint etlctl` or through `sh -c`).
FROM rust:1-bookworm AS builder
# protoc and its well-known types (google/protobuf/*.proto, in libprotobuf-dev), which the
# Temporal SDK's protos import.
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p worker -p client \
 && install -m 0755 target/release/etl-worker /usr/local/bin/etl-worker \
 && install -m 0755 target/release/etlctl /usr/local/bin/etlctl

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=builder /usr/local/bin/etl-worker /usr/local/bin/etl-worker
COPY --from=builder /usr/local/bin/etlctl /usr/local/bin/etlctl
USER nobody
# Prometheus metrics (ETL_METRICS_ADDR=0.0.0.0:9464 in docker-compose.yml).
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/etl-worker"]
