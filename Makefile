# walcast's everyday commands. `make` alone builds the binary.

GO ?= go
# Packages whose Fuzz tests `make fuzz` runs (every package with a Fuzz
# function, found anew each run so that a new fuzzer is never left out),
# and for how long each target runs.
FUZZ_PKGS ?= $(shell grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u)
FUZZTIME ?= 2m

.DEFAULT_GOAL := build
.PHONY: build test deps demo fmt vet fuzz bench soak

build:
	$(GO) build -o bin/walcast ./cmd/walcast

# deps installs PostgreSQL and Redis if they are missing (see the script).
deps:
	@bash scripts/install-deps.sh

# The integration tests start real PostgreSQL and Redis servers, so test
# needs deps first; 9 minutes keeps the whole run inside CI's 10.
test: deps
	$(GO) test -race -count=1 -timeout 9m ./...

demo:
	$(GO) run ./cmd/walcast demo

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
# minimal broadcast server, memory per idle connection) against throwaway
# PostgreSQL and Redis servers, and rewrites the generated section of
# docs/benchmarks.md and its chart. The Go micro-benchmarks are separate:
# go test -run='^$$' -bench=. -benchmem ./...
bench: deps
	$(GO) build -o bin/walcast ./cmd/walcast
	$(GO) build -o bin/walcast-bench ./cmd/walcast-bench
	bin/walcast-bench suite --walcast-bin bin/walcast --docs docs/benchmarks.md --json docs/benchmarks.json

# soak holds a steady load for 10 minutes, samples walcast's RSS every 10 s
# and reports whether it stayed within 5% after the first minute.
soak: deps
	$(GO) build -o bin/walcast ./cmd/walcast
	$(GO) build -o bin/walcast-bench ./cmd/walcast-bench
	bin/walcast-bench soak --walcast-bin bin/walcast --docs docs/benchmarks.md --json bin/soak.json
