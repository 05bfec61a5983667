# walcast's everyday commands. `make` alone builds the binary.

GO ?= go
# Packages whose Fuzz tests `make fuzz` runs (every package with a Fuzz
# function, found anew each run so that a new fuzzer is never left out),
# and for how long each target runs.
FUZZ_PKGS ?= $(shell grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u)
FUZZTIME ?= 2m

.DEFAULT_GOAL := build
.PHONY: build test deps demo-deps demo release docker fmt vet fuzz bench bench-serve-tier bench-election soak

# build makes a static binary stamped with its version, commit and commit
# date (scripts/version.sh); `bin/walcast version` prints them. The same
# script builds releases and the Docker image.
build:
	@GO=$(GO) bash scripts/build.sh bin/walcast

# deps installs what the tests need if it is missing (PostgreSQL, Redis,
# Node.js, Chromium, the browser tests' npm packages); demo-deps only
# PostgreSQL and Redis. `bash scripts/install-deps.sh --dry-run` says what
# it would install.
deps:
	@bash scripts/install-deps.sh

demo-deps:
	@bash scripts/install-deps.sh --demo

# The integration tests start real PostgreSQL and Redis servers, so test
# needs deps first; 9 minutes keeps the whole run inside CI's 10.
test: deps
	$(GO) test -race -count=1 -timeout 9m ./...

# demo installs PostgreSQL and Redis if missing, then starts a throwaway
# database, walcast and a simulated election, and prints the dashboard link.
# DEMO_FLAGS passes flags, e.g. make demo DEMO_FLAGS=--listen=:8090.
demo: demo-deps build
	bin/walcast demo $(DEMO_FLAGS)

# release builds static, reproducible binaries for linux and darwin (amd64,
# arm64), the npm package and SHA256SUMS into dist/ (scripts/release.sh).
release:
	@GO=$(GO) bash scripts/release.sh

# docker builds the image with the same stamp as `make build`: the image
# has no .git, so the stamp goes in as build arguments.
docker:
	@eval "$$(bash scripts/version.sh)" && docker build \
		--build-arg VERSION="$$VERSION" --build-arg COMMIT="$$COMMIT" \
		--build-arg DATE="$$DATE" --build-arg SOURCE_DATE_EPOCH="$$SOURCE_DATE_EPOCH" \
		-t walcast:"$$(echo "$$VERSION" | tr + -)" -t walcast:latest .

fmt:
	$(GO) fmt ./...

vet:
	$(GO) vet ./...

# go test -fuzz takes one package and one fuzz test at a time, so each Fuzz
# function of each package in FUZZ_PKGS gets its own run of FUZZTIME.
fuzz:
	@set -e; for pkg in $(FUZZ_PKGS); do \
		list=$$($(GO) test -list '^Fuzz' $$pkg); \
		fns=$$(echo "$$list" | grep '^Fuzz' || true); \
		if [ -z "$$fns" ]; then echo "fuzz: no Fuzz tests in $$pkg"; fi; \
		for fn in $$fns; do \
			echo "fuzz $$pkg $$fn"; \
			$(GO) test -run='^$$' -fuzz="^$$fn\$$" -fuzztime=$(FUZZTIME) $$pkg; \
		done; \
	done

# bench runs walcast-bench's standard set (under 10 minutes on 2 cores:
# capture vs pg_recvlogical and XADD, latency against load, fan-out vs a
# minimal broadcast server, memory per idle connection), then the scale of
# the serve tier and the election set (below), against throwaway
# PostgreSQL and Redis servers, and rewrites the generated sections of
# docs/benchmarks.md and its chart; last, `walcast-bench targets` puts
# issue 12's target table together from the sets' JSON (and the last
# `make soak`'s, bin/soak.json, when there is one).
# The Go micro-benchmarks are separate:
# go test -run='^$$' -bench=. -benchmem ./...
bench: deps
	$(GO) build -o bin/walcast ./cmd/walcast
	$(GO) build -o bin/walcast-bench ./cmd/walcast-bench
	bin/walcast-bench suite --walcast-bin bin/walcast --docs docs/benchmarks.md --json docs/benchmarks.json
	bin/walcast-bench serve-tier --walcast-bin bin/walcast --docs docs/benchmarks.md --json docs/benchmarks-serve-tier.json
	bin/walcast-bench election --walcast-bin bin/walcast --docs docs/benchmarks.md --json docs/benchmarks-election.json
	bin/walcast-bench targets --docs docs/benchmarks.md --json docs/benchmarks.json,docs/benchmarks-election.json,bin/soak.json

# bench-serve-tier measures only the scale of the serve tier (about two
# minutes): Redis CPU and network out with 0, 1, 4 and 16 `walcast serve`
# replicas following one Redis at 10,000 changes/s.
bench-serve-tier: deps
	$(GO) build -o bin/walcast ./cmd/walcast
	$(GO) build -o bin/walcast-bench ./cmd/walcast-bench
	bin/walcast-bench serve-tier --walcast-bin bin/walcast --docs docs/benchmarks.md --json docs/benchmarks-serve-tier.json

# bench-election measures only issue 12's rows (under 4 minutes; make bench
# runs it too, about 8.5 minutes in all on 2 cores): 10,000 and 19,000
# clients at 10 and 5 changes/s each seen by every client (and 10,000 at
# 50/s, the busy point CPU per delivery is compared with), and the quiet
# floor (100 clients, 10/s, Redis bus), each beside the minimal broadcast
# server; capture into Redis by `walcast run` and `walcast capture` against
# pg_recvlogical. It rewrites its own section of docs/benchmarks.md.
bench-election: deps
	$(GO) build -o bin/walcast ./cmd/walcast
	$(GO) build -o bin/walcast-bench ./cmd/walcast-bench
	bin/walcast-bench election --walcast-bin bin/walcast --docs docs/benchmarks.md --json docs/benchmarks-election.json

# soak holds a steady load for 10 minutes, samples walcast's RSS and its Go
# runtime's heap, stacks and GC goal every 10 s, takes heap profiles at
# minutes 1 and 10 (bin/soak-heap-1m.pprof, bin/soak-heap-10m.pprof) and
# reports whether RSS stayed within 5% after the first minute.
soak: deps
	$(GO) build -o bin/walcast ./cmd/walcast
	$(GO) build -o bin/walcast-bench ./cmd/walcast-bench
	bin/walcast-bench soak --walcast-bin bin/walcast --docs docs/benchmarks.md --json bin/soak.json
	bin/walcast-bench targets --docs docs/benchmarks.md --json docs/benchmarks.json,docs/benchmarks-election.json,bin/soak.json
