# Porthole as a container that drives the host's Docker daemon (the Docker engine backend).
# Build and run it with docker-compose.yml. Three stages: the frontend bundle, the release
# binary, and a slim runtime image with the shared libraries the binary links.

# --- frontend: static/app.js (embedded into the binary) ---------------------------------------
FROM node:20-bookworm-slim AS web
WORKDIR /src/web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error
COPY web/ ./
COPY static/ /src/static/
RUN npm run --silent build

# --- backend: target/release/porthole ---------------------------------------------------------
FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config libseccomp-dev libelf-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
COPY --from=web /src/static/ static/
RUN cargo build --release --locked -p porthole \
 && cp target/release/porthole /usr/local/bin/porthole

# --- runtime ------------------------------------------------------------------------------------
FROM debian:bookworm-slim
# libseccomp/libelf/zlib: linked by the binary; busybox-static: the starter image source;
# ca-certificates: for registries once image pulls exist; openssh-client: ssh:// Docker engines.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libseccomp2 libelf1 zlib1g busybox-static ca-certificates openssh-client \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/porthole /usr/local/bin/porthole
VOLUME /var/lib/porthole
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/porthole"]
CMD ["serve", "--listen", "0.0.0.0:8080", "--data-dir", "/var/lib/porthole"]
