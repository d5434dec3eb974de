# cdc-sink, built from source: docker build -t cdc-sink .
FROM rust:1.95-bookworm AS build
# librdkafka is compiled from source by rdkafka-sys (make, a C compiler, zlib, OpenSSL).
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential pkg-config libssl-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY tests ./tests
COPY benches ./benches
RUN cargo build --release --locked --bin cdc-sink

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 cdc-sink \
 && mkdir -p /var/lib/cdc-sink && chown cdc-sink /var/lib/cdc-sink
# Standalone mode keeps connectors posted over REST here (a volume in docker-compose.yml).
ENV CDC_SINK_WORKER__STATE_DIR=/var/lib/cdc-sink
COPY --from=build /src/target/release/cdc-sink /usr/local/bin/cdc-sink
COPY connectors /etc/cdc-sink/connectors
USER cdc-sink
ENTRYPOINT ["cdc-sink"]
CMD ["run", "--connector", "/etc/cdc-sink/connectors/inventory-elasticsearch.json"]
