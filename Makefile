# keyrelay. `make run` starts it on the embedded default; `make test` runs
# every test against real servers it starts itself.
GO       ?= go
BIN      := $(CURDIR)/bin
# Fuzz budgets are counts, not durations: Go 1.26's fuzzer can end a
# time-bounded run with a spurious "context deadline exceeded".
FUZZTIME ?= 100000x

.PHONY: all build run test unit e2e fuzz bench tools vet clean

all: build

build:
	$(GO) build -o $(BIN)/keyrelay ./cmd/keyrelay

# Pinned nats-server (version from go.mod), built once into the ignored bin/.
$(BIN)/nats-server: go.mod go.sum
	$(GO) build -o $@ github.com/nats-io/nats-server/v2

tools: $(BIN)/nats-server

run: build
	$(BIN)/keyrelay serve $(if $(CONFIG),--config $(CONFIG))

vet:
	$(GO) vet ./...

# Unit and integration tests with the race detector, then the end-to-end
# proof (verbose: it prints its counts), then short fuzz runs.
test: tools build vet
	$(GO) test -race -count=1 -timeout 12m $$($(GO) list ./... | grep -v /e2e$$)
	$(GO) test -count=1 -timeout 12m -v ./e2e
	$(MAKE) fuzz

fuzz:
	$(GO) test ./events -run='^$$' -fuzz='^FuzzDecode$$' -fuzztime=$(FUZZTIME)
	$(GO) test ./events -run='^$$' -fuzz='^FuzzOpen$$' -fuzztime=$(FUZZTIME)

bench: tools build
	$(GO) run ./bench/pipeline -runs 5

clean:
	rm -rf $(BIN) data
