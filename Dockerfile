# syntax=docker/dockerfile:1
# walcast: a static binary on a distroless base.
#
#   make docker          # stamped with the version, commit and date (git)
#   docker build -t walcast .   # works too; the image then says 0.x.y-dev
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
# The stamp (scripts/version.sh's output, passed by `make docker`); the
# build is scripts/build.sh, the one `make build` and `make release` use.
ARG VERSION
ARG COMMIT
ARG DATE
ARG SOURCE_DATE_EPOCH
RUN VERSION="${VERSION}" COMMIT="${COMMIT}" DATE="${DATE}" SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH}" \
      bash scripts/build.sh /walcast

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /walcast /walcast
USER nonroot:nonroot
EXPOSE 8080 9090
ENTRYPOINT ["/walcast"]
CMD ["run"]
