# The Go gateway: a static binary on a distroless base (no shell, non-root).
# Build from the repository root: docker build -f deploy/docker/gateway.Dockerfile .
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY gateway ./gateway
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/vlcache-gateway ./gateway/cmd/vlcache-gateway

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/vlcache-gateway /usr/local/bin/vlcache-gateway
# The model directory (tokenizer.json, tokenizer_config.json, preprocessor_config.json) is
# mounted at /models by compose / Kubernetes; the gateway reads text and image settings there.
EXPOSE 8080
USER nonroot:nonroot
ENTRYPOINT ["/usr/local/bin/vlcache-gateway"]
