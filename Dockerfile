# kilnd in a container, for a single VM (see docker-compose.yml and
# docs/OPERATIONS.md). kilnd runs its own containerd inside this container,
# so the container must be privileged: containerd and runc mount
# filesystems, create namespaces and write cgroups.
#
#   docker build -t kiln .
#   docker run --privileged --cgroupns=host -p 8080:8080 \
#     --tmpfs /run/containerd -v kiln-data:/var/lib/kiln \
#     -e KILN_ADMIN_TOKEN=... kiln

FROM golang:1.26-bookworm AS build
WORKDIR /src
# Modules first, so editing kiln's code does not download them again.
COPY go.mod go.sum ./
RUN go mod download
# Only the packages the two commands import (deploy/deploy_test.go checks
# this list against `go list -deps`), so a local .kiln/ data dir or bin/
# never ends up in the build.
COPY cmd/ cmd/
COPY api/ api/
COPY calls/ calls/
COPY seal/ seal/
COPY errdefs/ errdefs/
COPY executor/ executor/
COPY imagebuild/ imagebuild/
COPY images/ images/
COPY metrics/ metrics/
COPY pool/ pool/
COPY protocol/ protocol/
COPY store/ store/
ARG VERSION=dev
# Static binaries: the runtime image has no Go toolchain and its libc
# must not matter.
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.Version=${VERSION}" -o /out/kilnd ./cmd/kilnd \
 && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.Version=${VERSION}" -o /out/kiln ./cmd/kiln \
 && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/kiln-init ./cmd/kiln-init

FROM debian:bookworm-slim
# containerd and runc run the functions; tini is PID 1 because containerd
# shims re-parent to PID 1 when they exit and kilnd does not reap
# processes it did not start; curl is for HEALTHCHECK.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates containerd runc tini curl \
 && rm -rf /var/lib/apt/lists/*
# kiln-init beside kilnd: functions then get kilnd's FIFOs as their stdio
# directly, not through the shim's copies.
COPY --from=build /out/kilnd /out/kiln /out/kiln-init /usr/local/bin/
# containerd's snapshots must live on a real filesystem: overlayfs cannot
# stack on the container's own overlay root.
VOLUME /var/lib/kiln
EXPOSE 8080
# The start period covers the embedded containerd coming up. /healthz is
# 200 only while containerd answers.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD curl -fsS --max-time 4 http://127.0.0.1:8080/healthz || exit 1
# Flags given after the image name (or as compose's `command:`) are
# appended; a repeated flag overrides the one here.
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/kilnd", "--listen", "0.0.0.0:8080", "--data-dir", "/var/lib/kiln"]
