# syntax=docker/dockerfile:1
# A static eci-profile binary (musl) in an empty image, running as non-root.
#   docker build -t eci-profile .

FROM rust:1.95-alpine AS build
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin eci-profile \
 && strip target/release/eci-profile

FROM scratch
COPY --from=build /src/target/release/eci-profile /eci-profile
# The nonroot user of distroless images; the manifests set the same.
USER 65532:65532
EXPOSE 8443 8080
ENTRYPOINT ["/eci-profile"]
CMD ["serve"]
