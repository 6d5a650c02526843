# syntax=docker/dockerfile:1
#
# Container image of invite-operator: a static (musl) binary on distroless, running as non-root.
# The binary is built with `--no-default-features`: it carries no mock API (no `mock-api`
# subcommand, no `reconcile --mock-api`); the mock is the separate `invite-mock` crate.
#
# Build (from the repository root; BuildKit is the default builder of current Docker):
#   docker build -t invite-operator:0.1.0 .
# Load it into a local cluster:
#   kind load docker-image invite-operator:0.1.0          # kind
#   k3d image import invite-operator:0.1.0                # k3d
# Run it locally against your kubeconfig:
#   docker run --rm -v ~/.kube/config:/kubeconfig:ro -e KUBECONFIG=/kubeconfig invite-operator:0.1.0
#
# The Helm chart in deploy/charts/invite-operator runs this image with `args: [run]`, as user
# 65532, with a read-only root filesystem.

ARG RUST_IMAGE=rust:1-bookworm

FROM ${RUST_IMAGE} AS builder
ARG TARGET=x86_64-unknown-linux-musl
# The commit the image is built from, shown by the invite_operator_build_info metric
# (`docker build --build-arg GIT_SHA=$(git rev-parse HEAD) .`); empty: "unknown".
ARG GIT_SHA=""
ENV GIT_SHA=${GIT_SHA}
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add "${TARGET}"
# ring (rustls' crypto) compiles C code: build it against musl's headers and libc.
ENV CC_x86_64_unknown_linux_musl=musl-gcc \
    CARGO_PROFILE_RELEASE_STRIP=symbols \
    CARGO_TERM_COLOR=never
WORKDIR /build
# The whole workspace (mock/ and tests/support are workspace members, so Cargo needs their
# manifests; neither is compiled into the image); .dockerignore keeps target dirs, .git and the
# chart out of the context.
COPY . .
# The cache mounts keep the registry and the target dir between builds; the binary is copied
# out of the cached target dir so the next stage can take it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/build/target \
    cargo build --release --locked --target "${TARGET}" --bin invite-operator --no-default-features \
 && cp "target/${TARGET}/release/invite-operator" /invite-operator \
 && /invite-operator --version \
 && if /invite-operator mock-api --help >/dev/null 2>&1; then echo "the image must not carry the mock API" >&2; exit 1; fi

FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="invite-operator" \
      org.opencontainers.image.description="Kubernetes operator that turns UserInvitation resources into invitations on a user-management API" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /invite-operator /invite-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/invite-operator"]
CMD ["run"]
