# syntax=docker/dockerfile:1
# walcast: a static binary on a distroless base.
#
#   docker build -t walcast .
#   docker run --rm -p 8080:8080 -p 127.0.0.1:9090:9090 \
#     -e WALCAST_DATABASE_URL=postgres://… -e WALCAST_JWT_SECRET=… \
#     -e WALCAST_INTERNAL_LISTEN=:9090 walcast
#
# 8080 is the public port (/ws, /healthz, /readyz); 9090, when
# WALCAST_INTERNAL_LISTEN is set, is for operators only (/metrics, detailed
# /readyz, pprof): publish it on a private address. Pass secrets in the
# environment, not as flags (a command line is visible to `ps`).

FROM golang:1.26 AS build
WORKDIR /src
# Modules first, so a source change does not re-download them.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -buildvcs=false \
      -ldflags "-s -w -X main.version=${VERSION}" \
      -o /walcast ./cmd/walcast

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /walcast /walcast
USER nonroot:nonroot
EXPOSE 8080 9090
ENTRYPOINT ["/walcast"]
CMD ["run"]
