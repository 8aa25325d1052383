# chexd container image.
#   docker build -t chexd .            (or: podman build --format docker -t chexd .)
#   docker run --rm -p 8080:8080 chexd
#   curl -H 'Content-Type: image/png' --data-binary @xray.png http://127.0.0.1:8080/v1/predict
# Real weights: docker run -v /srv/chexd-models:/models:ro -e CHEXD_MODEL=/models/chexnet.safetensors ...
# The binaries are built with the Makefile's generic flags (no -march=native): the
# kernels for AVX2/AVX-512 are all compiled in and chosen at run time, so one image
# runs on any x86-64 host.

# ---- build stage: compilers and -dev packages, then `make` -------------------------
FROM debian:bookworm-slim AS build
ARG DEBIAN_FRONTEND=noninteractive
WORKDIR /src
# Dependencies first, so that editing sources does not invalidate this layer.
COPY deploy/install-deps.sh deploy/install-deps.sh
COPY deploy/packages/ deploy/packages/
RUN bash deploy/install-deps.sh --build && rm -rf /var/lib/apt/lists/*
COPY . .
RUN make -j"$(nproc)" BUILD=/tmp/build BIN=/src/bin MODELS=/src/models all

# ---- runtime stage: shared libraries only -----------------------------------------
FROM debian:bookworm-slim
# ARG, not ENV: only for the apt run below, not in the running container's environment.
ARG DEBIAN_FRONTEND=noninteractive
LABEL org.opencontainers.image.title="chexd" \
      org.opencontainers.image.description="Chest X-ray classification service (DenseNet-121 CheXNet in C, REST: PNG, JPEG, DICOM)"
COPY deploy/install-deps.sh /tmp/deps/install-deps.sh
COPY deploy/packages/runtime.txt /tmp/deps/packages/runtime.txt
RUN bash /tmp/deps/install-deps.sh --runtime \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /tmp/deps \
    && groupadd --system --gid 10001 chexd \
    && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
               --shell /usr/sbin/nologin chexd \
    && mkdir -p /models
COPY --from=build /src/bin/chexd /src/bin/chex /opt/chexd/bin/
COPY deploy/chexd-probe /opt/chexd/bin/
COPY --from=build /src/models/chexnet-demo.safetensors /opt/chexd/models/
# Real weights are mounted here (read-only is enough); select them with CHEXD_MODEL.
VOLUME /models
ENV PATH=/opt/chexd/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    CHEXD_LISTEN=0.0.0.0 \
    CHEXD_PORT=8080 \
    CHEXD_MODEL=/opt/chexd/models/chexnet-demo.safetensors
# Numeric so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
WORKDIR /opt/chexd
EXPOSE 8080
# chexd drains in-flight requests on SIGTERM.
STOPSIGNAL SIGTERM
# No curl in the image: deploy/chexd-probe speaks HTTP/1.0 with bash's /dev/tcp, or HTTPS
# with openssl s_client when CHEXD_TLS_CERT_FILE is set.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["/opt/chexd/bin/chexd-probe", "/healthz"]
ENTRYPOINT ["/opt/chexd/bin/chexd"]
