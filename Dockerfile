# syntax=docker/dockerfile:1
#
# One image for the sidecar and the example services:
#   sidestream        the CLI and the daemon (`sidestream sidecar`), the ENTRYPOINT
#   order-service     the shop example's HTTP order API   (command: ["order-service"])
#   payment-service   the shop example's payment service  (command: ["payment-service"])
#
#   docker build -t sidestream:0.1.0 .
#   docker run --rm -p 7400:7400/udp -p 7480:7480 sidestream:0.1.0
#
# The runtime stage is Debian slim rather than distroless: the Helm chart's init container
# uses its shell to give a hostPath folder to the sidecar's user. The binaries link glibc only
# (rustls with ring: no OpenSSL).

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src
COPY . .
# The registry and the target folder are build caches, so the binaries are copied out in the
# same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p sidestream-sidecar -p order-service -p payment-service \
 && install -D -m 0755 -t /out \
      target/release/sidestream target/release/order-service target/release/payment-service

FROM debian:${DEBIAN_RELEASE}-slim
RUN groupadd --system --gid 10001 sidestream \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /var/lib/sidestream --shell /usr/sbin/nologin sidestream \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/sidestream
COPY --from=build /out/ /usr/local/bin/
# The data directory of the sidecar, and where the SDK and the CLI look for tls/.
ENV SIDESTREAM_DATA_DIR=/var/lib/sidestream
USER 10001:10001
WORKDIR /var/lib/sidestream
# Client QUIC, peer QUIC, admin HTTP (the sidecar); the order API (order-service).
EXPOSE 7400/udp 7401/udp 7480/tcp 8080/tcp
ENTRYPOINT ["sidestream"]
# A sidecar alone, reachable from outside the container.
CMD ["sidecar", "--listen", "0.0.0.0:7400", "--admin-listen", "0.0.0.0:7480"]
