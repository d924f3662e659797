# legate's container image, the one docs/examples/k8s/sidecar.yaml runs:
#   docker build -t registry.example/legate:0.1.0 .
# The build stage builds the Debian package as CI does (cpack -G DEB); the
# runtime stage installs that package on bookworm-slim. legate runs as the
# non-root user 1337 (the manifest's runAsUser); nothing needs a shell at run
# time (the entrypoint is exec form).

FROM debian:bookworm AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      build-essential cmake pkg-config file dpkg-dev \
      libssl-dev libnghttp2-dev libprotobuf-c-dev protobuf-c-compiler \
      libprotobuf-dev protobuf-compiler libgrpc-dev libev-dev libyaml-dev \
      libhttp-parser-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DLEGATE_TESTS=OFF \
 && cmake --build /build -j "$(nproc)" \
 && cd /build && cpack -G DEB

FROM debian:bookworm-slim
COPY --from=build /build/legate_*.deb /tmp/
# The legate user first, with the manifest's uid: the package's postinst finds
# it and creates none. wget is for the manifest's preStop hook, which POSTs
# /healthcheck/fail to the admin listener.
RUN groupadd --system --gid 1337 legate \
 && useradd --system --uid 1337 --gid legate --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin legate \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      /tmp/legate_*.deb wget \
 && rm -rf /var/lib/apt/lists/* /tmp/legate_*.deb
USER 1337:1337
EXPOSE 10443 9901
ENTRYPOINT ["/usr/bin/legate"]
CMD ["-c", "/etc/legate/legate.yaml"]
