# kiln — run `make help` for the targets.
SHELL    := /bin/bash
GO        ?= go
BIN       := bin
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.Version=$(VERSION)
PKGS_UNIT := ./protocol/... ./pool/... ./store/... ./api/... ./executor/... ./imagebuild/... ./images/... ./cmd/... ./errdefs/... ./metrics/... ./calls/... ./seal/... ./deploy/...
FUZZTIME  ?= 60s

.PHONY: help build run test test-unit test-e2e test-cluster lint fuzz bench bench-peer profile soak clean

help: ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## build bin/kilnd, bin/kiln-init and bin/kiln
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/kilnd ./cmd/kilnd
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o $(BIN)/kiln-init ./cmd/kiln-init
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/kiln ./cmd/kiln

run: ## install containerd+runc if missing, build, deploy the example, run kilnd in the foreground
	scripts/install-deps.sh
	$(MAKE) build
	scripts/run.sh

lint: ## go vet and gofmt
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

test-unit: ## unit tests, with the race detector
	$(GO) test -race -count=1 $(PKGS_UNIT)

test-e2e: ## end-to-end tests against a containerd the tests start
	$(GO) test -count=1 -timeout 40m -v ./test/... 2>&1 | tee test-e2e.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic|\s+\S+_test.go)' ; exit $${PIPESTATUS[0]}

test-cluster: ## 3 kilnd nodes in network namespaces on Postgres, NATS and HAProxy; one SIGKILLed mid-load
	$(GO) test -count=1 -timeout 30m -run '^TestCluster' -v ./test/ -args -cluster

test: lint test-unit test-e2e test-cluster ## everything CI runs: lint, unit tests, end-to-end tests, the cluster test

fuzz: ## run every fuzz target for FUZZTIME (default 60s) each
	@for pkg in ./protocol ./api; do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg | grep ^Fuzz); do \
	    echo "== $$pkg $$t"; $(GO) test $$pkg -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) || exit 1; \
	  done; \
	done

bench: ## benchmarks: codecs, pool, and kiln against bare containerd
	$(GO) test -run '^$$' -bench . -benchmem ./protocol/ ./pool/
	$(GO) test -count=1 -timeout 30m -run '^TestBench' -v ./test/ -args -bench-e2e

bench-peer: ## kiln side by side with Knative's queue-proxy (built at run time): kiln/peer ratios, one run
	$(GO) test -count=1 -timeout 30m -run '^TestBenchPeer$$' -v ./test/ -args -bench-peer

profile: ## kilnd's CPU profile under a c=16 hot load, to kilnd.prof, and its CPU per call
	$(GO) test -count=1 -timeout 10m -run '^TestProfileKilnd$$' -v ./test/ -args -profile-out $(CURDIR)/kilnd.prof

clean: ## remove build output
	rm -rf $(BIN) test-e2e.log kilnd.prof

soak: ## soak: mixed sync/async load with faults for SOAK (default 5m); prints figures
	$(GO) test -count=1 -timeout 60m -run '^TestSoak$$' -v ./test/ -args -soak $${SOAK:-5m}
