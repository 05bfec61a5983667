# syntax=docker/dockerfile:1
# walcast: a static binary on a distroless base.
#
#   docker build -t walcast .
#   docker run --rm -p 8080:8080 \
#     -e WALCAST_DATABASE_URL=postgres://… -e WALCAST_JWT_SECRET=… walcast

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
EXPOSE 8080
ENTRYPOINT ["/walcast"]
CMD ["run"]
