# Worker image: `docker build -t catalog-etl-worker .` (used by docker-compose.yml).
FROM rust:1-bookworm AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p worker \
 && install -m 0755 target/release/etl-worker /usr/local/bin/etl-worker

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=builder /usr/local/bin/etl-worker /usr/local/bin/etl-worker
USER nobody
ENTRYPOINT ["/usr/local/bin/etl-worker"]
