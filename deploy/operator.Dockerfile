# The shoal operator image, as charts/shoal runs it:
#
#   docker build -f deploy/operator.Dockerfile -t shoal-operator:dev .
#   kind load docker-image shoal-operator:dev
#
# Multi-stage: the build stage compiles the binary with the operator's own
# Cargo profile (`operator`: optimised for size, whole-program LTO; the
# workspace's Cargo.toml says why); the final image
# is distroless (glibc, CA certificates, no shell, no package manager) and
# runs as the non-root user 65532 the chart's securityContext expects.
# Not built by the test command: the development machines have no container
# engine. The binary inside is the one the tests run.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --profile operator --locked -p shoal-operator \
 && strip --strip-debug target/operator/shoal-operator

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/operator/shoal-operator /usr/local/bin/shoal-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/shoal-operator"]
CMD ["run"]
