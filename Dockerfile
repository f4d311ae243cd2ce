# chatd in a container: built from this source tree on Debian 12, run on
# Debian 12 slim with only the runtime libraries.
#
#   docker build -t chatd .
#   docker run --rm -p 8080:8080 -e CHATD_DATABASE=sqlite:/var/lib/chatd/chatd.db chatd
#
# docker-compose.yml builds it for the `chatd` service. Logs go to stdout,
# one JSON object per line (what Alloy and Promtail ship to Loki).

FROM debian:12-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential autoconf automake pkg-config \
      libwebsockets-dev libwebsockets-evlib-uv libuv1-dev libjson-c-dev \
      libsqlite3-dev libpq-dev libhiredis-dev libcrypt-dev libssl-dev check \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Only what the build reads: a configured source tree (build outputs,
# config.status) next to this file must not leak into the image.
COPY configure.ac Makefile.am autogen.sh README.md ./
COPY src/ src/
COPY migrations/ migrations/
COPY sql/ sql/
COPY web/ web/
RUN ./autogen.sh \
 && ./configure --prefix=/usr --sysconfdir=/etc --localstatedir=/var \
 && make -j"$(nproc)" chatd \
 && make install-exec install-data DESTDIR=/out

FROM debian:12-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libwebsockets17 libwebsockets-evlib-uv libuv1 libjson-c5 \
      libsqlite3-0 libpq5 libhiredis0.14 \
      libcrypt1 libssl3 ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home-dir /var/lib/chatd --create-home \
      --shell /usr/sbin/nologin chatd
COPY --from=build /out/ /
USER chatd
WORKDIR /var/lib/chatd
ENV CHATD_LISTEN=0.0.0.0:8080 \
    CHATD_DATABASE=sqlite:/var/lib/chatd/chatd.db
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8080/health >/dev/null || exit 1
ENTRYPOINT ["/usr/bin/chatd"]
