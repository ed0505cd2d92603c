# syntax=docker/dockerfile:1
# A static eci-profile binary (musl) in an empty image, running as non-root.
#   docker build -t eci-profile .
#   docker buildx build --platform linux/amd64,linux/arm64 \
#     --build-arg VERSION=X.Y.Z --build-arg REVISION="$(git rev-parse HEAD)" -t REGISTRY/eci-profile:X.Y.Z .
#
# Multi-arch: each platform builds natively in its own variant of the Rust
# image (under QEMU for the platform the builder is not), so no cross linker is
# involved; arm64 under emulation is several times slower than amd64.
#
# Base image: the multi-arch index of rust:1.95-alpine, pinned by digest (the
# one public Dockerfiles pin for that tag). Check or refresh it with:
#   docker buildx imagetools inspect docker.io/library/rust:1.95-alpine
FROM docker.io/library/rust:1.95-alpine@sha256:606fd313a0f49743ee2a7bd49a0914bab7deedb12791f3a846a34a4711db7ed2 AS build
RUN apk add --no-cache musl-dev~=1.2
WORKDIR /src

# Dependencies first, in a layer of their own: it is rebuilt only when
# Cargo.toml or Cargo.lock change, not on every source change. The crate's own
# targets are stubs here (the benches are declared in Cargo.toml, so they must exist).
COPY Cargo.toml Cargo.lock build.rs ./
RUN mkdir -p src benches \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && echo 'fn main() {}' > benches/request_path.rs \
 && echo 'fn main() {}' > benches/diff.rs \
 && cargo build --release --locked --bin eci-profile \
 && rm -rf src benches target/release/eci-profile* \
      target/release/deps/eci_profile-* target/release/deps/libeci_profile-* \
      target/release/.fingerprint/eci-profile-*

COPY src ./src
COPY benches ./benches
# What `eci-profile version` and eci_profile_build_info report (the context
# has no .git); SOURCE_DATE_EPOCH, if given, fixes the build date.
ARG REVISION=unknown
ARG SOURCE_DATE_EPOCH
ENV ECI_PROFILE_REVISION=${REVISION}
RUN cargo build --release --locked --bin eci-profile \
 && strip target/release/eci-profile

# An empty final image: the binary is static and needs no CA bundle (in a
# cluster it trusts the service account's CA), no shell and no users file.
FROM scratch
ARG VERSION=unknown
ARG REVISION=unknown
ARG SOURCE=https://github.com/eci-profile/eci-profile
LABEL org.opencontainers.image.title="eci-profile" \
      org.opencontainers.image.description="Kubernetes mutating admission webhook that sends pods to virtual nodes (ECI / virtual-kubelet)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build /src/target/release/eci-profile /eci-profile
# Inside a container the listeners must be reachable from outside it; the
# binary's own defaults are loopback. Flags still override these.
ENV ECI_PROFILE_LISTEN=0.0.0.0:8443 \
    ECI_PROFILE_ADMIN_LISTEN=0.0.0.0:8080
# The nonroot user of distroless images; the manifests set the same.
USER 65532:65532
EXPOSE 8443 8080
ENTRYPOINT ["/eci-profile"]
CMD ["serve"]
