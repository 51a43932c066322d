# syntax=docker/dockerfile:1
# dynokv: build the release binary, run it as a non-root user on a slim base.
#
#   docker build -t dynokv .
#   docker run --rm -p 6379:6379 -p 16379:16379 -v dynokv-data:/data dynokv
#
# Any `dynokv serve` flag (or DYNOKV_* variable) can be given; arguments
# replace the whole CMD, so repeat --bind and --data-dir. Bound to 0.0.0.0,
# a node advertises its host name to its peers (override with
# --peer-advertise HOST:PORT); docker-compose.yml starts a 3-node cluster.

FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# The cache mounts keep the registry and the build directory between builds;
# the binary is copied out of the cached target directory.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin dynokv \
    && install -D -m 0755 target/release/dynokv /out/dynokv

FROM debian:bookworm-slim
RUN groupadd --system --gid 10001 dynokv \
    && useradd --system --uid 10001 --gid dynokv --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin dynokv \
    && mkdir -p /data \
    && chown dynokv:dynokv /data
COPY --from=builder /out/dynokv /usr/local/bin/dynokv
USER dynokv
WORKDIR /data
VOLUME /data
# 6379: RESP clients; 16379: the peer protocol (client port + 10000).
EXPOSE 6379 16379
ENTRYPOINT ["dynokv"]
CMD ["serve", "--bind", "0.0.0.0", "--data-dir", "/data"]
