# shoal's Lambda host (`shoal-host`): the operator's init container copies
# it into the pods of jobs whose handler is an existing Lambda function's
# image (`handler.function`), where it serves the function the Runtime API.
#
# Not built by the test command: the development machines have no container
# engine. scripts/build-images.sh writes the same image as an OCI archive,
# and tests/tests/images.rs checks the two agree.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p shoal-host \
 && strip --strip-debug target/release/shoal-host

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/shoal-host /usr/local/bin/shoal-host
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/shoal-host"]
