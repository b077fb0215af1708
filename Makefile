# keyrelay. `make run` starts it on the embedded default; `make test` runs
# every test against real servers it starts itself.
GO       ?= go
BIN      := $(CURDIR)/bin
# Fuzz budgets are counts, not durations: Go 1.26's fuzzer can end a
# time-bounded run with a spurious "context deadline exceeded".
FUZZTIME ?= 100000x

.PHONY: all build run test unit e2e fuzz bench bench-ceilings tools vet clean image-bin compose-test

all: build

build:
	$(GO) build -o $(BIN)/keyrelay ./cmd/keyrelay

# Test servers, built from their Go modules at pinned versions. Each is
# built once into a cache outside the work tree (so a fresh clone on the
# same machine, as CI uses, reuses it) and linked into the ignored bin/.
TOOLS_CACHE       ?= $(HOME)/.cache/keyrelay-tools
NATS_SERVER_VER   := $(shell $(GO) list -m -f '{{.Version}}' github.com/nats-io/nats-server/v2)
VAULT_VER         := v1.21.0
LOCAL_KMS_VER     := v0.0.0-20260228092603-2a5e92d09ab6

$(TOOLS_CACHE)/nats-server-$(NATS_SERVER_VER):
	@mkdir -p $(TOOLS_CACHE)
	$(GO) build -o $@.tmp github.com/nats-io/nats-server/v2 && mv $@.tmp $@

$(BIN)/nats-server: $(TOOLS_CACHE)/nats-server-$(NATS_SERVER_VER)
	@mkdir -p $(BIN)
	ln -sf $< $@

# HashiCorp Vault: its own module in tools/vault (Vault's dependency graph
# stays out of go.mod). The first build takes 15-20 minutes on 2 cores.
$(TOOLS_CACHE)/vault-$(VAULT_VER):
	@mkdir -p $(TOOLS_CACHE)
	cd tools/vault && $(GO) build -mod=mod -ldflags="-s -w" -o $@.tmp . && mv $@.tmp $@

$(BIN)/vault: $(TOOLS_CACHE)/vault-$(VAULT_VER)
	@mkdir -p $(BIN)
	ln -sf $< $@

# local-kms: AWS KMS's API over a local store.
$(TOOLS_CACHE)/local-kms-$(LOCAL_KMS_VER):
	@mkdir -p $(TOOLS_CACHE)/gobin-local-kms
	GOBIN=$(TOOLS_CACHE)/gobin-local-kms $(GO) install github.com/nsmithuk/local-kms@$(LOCAL_KMS_VER)
	mv $(TOOLS_CACHE)/gobin-local-kms/local-kms $@

$(BIN)/local-kms: $(TOOLS_CACHE)/local-kms-$(LOCAL_KMS_VER)
	@mkdir -p $(BIN)
	ln -sf $< $@

tools: $(BIN)/nats-server $(BIN)/local-kms $(BIN)/vault

# The images' nats-server: the same pinned version, static (CGO_ENABLED=0)
# for a FROM-scratch image; the tests' bin/nats-server links libc.
$(TOOLS_CACHE)/nats-server-static-$(NATS_SERVER_VER):
	@mkdir -p $(TOOLS_CACHE)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags="-s -w" -o $@.tmp github.com/nats-io/nats-server/v2 && mv $@.tmp $@

# bin/image: the build context of deploy/Dockerfile (keyrelay:local) and
# deploy/docker/nats.Dockerfile (keyrelay-nats:local), both FROM scratch:
# static binaries, the healthcheck probe, /etc/passwd and /etc/group, this
# machine's CA bundle, an empty /tmp and an empty state directory.
IMAGE_DIR := $(BIN)/image

image-bin: $(TOOLS_CACHE)/nats-server-static-$(NATS_SERVER_VER)
	@mkdir -p $(IMAGE_DIR)/empty $(IMAGE_DIR)/tmp
	chmod 1777 $(IMAGE_DIR)/tmp
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags="-s -w" -o $(IMAGE_DIR)/keyrelay ./cmd/keyrelay
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags="-s -w" -o $(IMAGE_DIR)/healthcheck ./deploy/docker/healthcheck
	cp $< $(IMAGE_DIR)/nats-server
	cp deploy/docker/passwd deploy/docker/group /etc/ssl/certs/ca-certificates.crt $(IMAGE_DIR)/

# docker-compose.yml for real (deploy/compose/test.sh): installs Docker and
# docker-compose from Debian's packages if missing, starts dockerd if none
# runs, builds the images, starts the stack, publishes from the host, reads
# a key back, SIGKILLs a worker, and tears everything down. Installing and
# starting dockerd need root; where no engine can start it says why and
# skips (exit 0).
compose-test: build image-bin
	bash deploy/compose/test.sh

run: build
	$(BIN)/keyrelay serve $(if $(CONFIG),--config $(CONFIG))

vet:
	$(GO) vet ./...
	$(GO) vet -tags keyrelay_ceiling ./worker ./bench/pipeline

# Unit and integration tests with the race detector, then the end-to-end
# proof (verbose: it prints its counts), then short fuzz runs, then the
# Docker Compose stack for real.
#
# Most unit tests wait on servers and timers more than they compute (a run
# keeps the 2 CPUs about half busy), so three packages run at once, and
# the longest (SLOW_PKGS, minutes each) are listed first so that they
# start first instead of finishing last.
#
# The end-to-end tests without a timing bound (the provider scenarios, the
# hand edits, the migration and the restore: mostly waiting, each with
# servers of its own) run E2E_PARALLEL at once, after the ones with a
# timing bound (node loss, quotas, stalls, grace periods) have run alone.
#
# The unit phase's -timeout bounds each package's test binary: the worker
# package, the longest, ran 649 s on 2026-12-07, so 15 minutes leaves it
# room on a slower machine while still ending a hung test.
SLOW_PKGS := ./worker ./jobs ./internal/app ./quota ./outbox ./lookup ./providers/vault
UNIT_P    ?= 3
E2E_PARALLEL ?= 4
test: tools build vet
	$(GO) test -p $(UNIT_P) -race -count=1 -timeout 15m -tags conjursdk $$($(GO) list $(SLOW_PKGS)) \
		$$($(GO) list ./... | grep -v /e2e$$ | grep -vxF "$$($(GO) list $(SLOW_PKGS))")
	$(GO) test -count=1 -timeout 25m -v -parallel $(E2E_PARALLEL) ./e2e
	$(MAKE) fuzz
	$(MAKE) compose-test

fuzz:
	$(GO) test ./events -run='^$$' -fuzz='^FuzzDecode$$' -fuzztime=$(FUZZTIME)
	$(GO) test ./events -run='^$$' -fuzz='^FuzzOpen$$' -fuzztime=$(FUZZTIME)
	$(GO) test ./events -run='^$$' -fuzz='^FuzzValidateID$$' -fuzztime=$(FUZZTIME)
	$(GO) test ./worker -run='^$$' -fuzz='^FuzzRedactedCopy$$' -fuzztime=$(FUZZTIME)
	$(GO) test ./internal/jsonw -run='^$$' -fuzz='^FuzzAppendString$$' -fuzztime=$(FUZZTIME)

bench: tools build
	$(GO) run ./bench/pipeline -runs 5
	$(GO) run ./bench/pipeline -runs 5 -ownership exclusive
	$(GO) run ./bench/pipeline -runs 3 -cluster 3
	$(GO) run ./bench/pipeline -runs 3 -cluster 3 -ownership exclusive
	$(GO) run ./bench/natswrites -runs 2
	$(GO) test -run '^$$' -bench BenchmarkRequest -benchtime 3s -count 2 ./worker/
	$(GO) test -run '^$$' -bench BenchmarkReadRange -benchtime 10x -count 2 ./internal/jsread/
	$(GO) run ./bench/vault -runs 3
	$(GO) run ./bench/vault -runs 3 -ownership exclusive
	$(GO) run ./bench/vault -runs 3 -isolate-vault
	$(GO) run ./bench/vault -runs 3 -cluster 3
	$(GO) run ./bench/lookup -runs 3
	$(GO) run ./bench/outbox -runs 5
	$(GO) run ./bench/restore -keys 20000 -runs 3
	$(GO) run ./bench/latency -runs 3
	$(GO) run ./bench/lanes
	$(GO) run ./bench/seal -runs 3
	$(GO) run ./bench/memory
	KEYRELAY_QUOTA_KEYS_AWS=20000 KEYRELAY_QUOTA_KEYS_GOOGLE=2000 $(GO) test ./e2e -run '^TestClusterQuota' -count=1 -v -timeout 60m | grep -E '^e2e .* quota run|^(--- FAIL|FAIL)'

# What fewer ledger writes per event would reach (unsafe keyrelay_ceiling
# build of bench/pipeline; not part of bench: about 25 minutes).
bench-ceilings: tools
	$(GO) run ./bench/ceilings -rounds 4
	$(GO) run ./bench/ceilings -rounds 2 -- -cluster 3

clean:
	rm -rf $(BIN) data
