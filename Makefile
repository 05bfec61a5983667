# walcast's everyday commands. `make` alone builds the binary.

GO ?= go
# Packages whose Fuzz tests `make fuzz` runs, and for how long each.
FUZZ_PKGS ?= ./cdc
FUZZTIME ?= 30s

.DEFAULT_GOAL := build
.PHONY: build test deps demo fmt vet fuzz bench

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

bench:
	$(GO) test -run='^$$' -bench=. -benchmem ./...
