# tritonserver with the vlcache backend. NVIDIA's image carries Triton 2.51 (24.10) and
# its C API headers under /opt/tritonserver/include, which the backend builds against.
# Build from the repository root: docker build -f deploy/docker/triton.Dockerfile .
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.10-py3
FROM ${TRITON_IMAGE} AS build
RUN apt-get update && apt-get install -y --no-install-recommends \
      cmake ninja-build g++ pkg-config libopenblas-dev nlohmann-json3-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt ./
COPY backend ./backend
COPY kernels ./kernels
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DVLCACHE_BUILD_TESTS=OFF \
      -DTRITON_INCLUDE_DIR=/opt/tritonserver/include \
    && cmake --build build -j "$(nproc)"

FROM ${TRITON_IMAGE}
RUN apt-get update && apt-get install -y --no-install-recommends libopenblas0-pthread \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/build/triton_backends/vlcache /opt/tritonserver/backends/vlcache
# Model repository and checkpoints are mounted (compose: ./triton_models, ./testdata).
EXPOSE 8000 8001 8002
ENTRYPOINT ["tritonserver"]
