# berth: build, test and run. Keep this short; see README.md.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
GO ?= go
# go.mod asks for Go 1.27.3; the go command fetches it from the module proxy.
export GOTOOLCHAIN := go1.27.3
BINARIES := berth-broker berth-agent berth

.PHONY: build test test-short lint vulncheck bench bench-fleet fuzz run clean deb

build:
	@mkdir -p bin
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/ $(addprefix ./cmd/,$(BINARIES))

# The whole test suite: what CI runs (.ci/run) and what README tells you to run.
# scripts/test.sh installs missing Debian packages (as root) and finds or
# starts a PostgreSQL for the PostgreSQL tests.
test: build
	GO=$(GO) ./scripts/test.sh

test-short:
	$(GO) test -short ./...

# Static checks: vet, gofmt, staticcheck and tidy go.mod files (tools/go.mod
# holds the build tools, out of the product's dependencies).
TOOL := $(GO) tool -modfile=tools/go.mod
lint:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	$(TOOL) staticcheck ./...
	$(GO) mod tidy -diff
	cd tools && $(GO) mod tidy -diff
	cd tools/hydra && $(GO) mod tidy -diff

# govulncheck against a vulnerability database built from golang.org/x/vulndb
# (scripts/vulncheck.sh); CI runs it after the tests.
vulncheck:
	GO=$(GO) ./scripts/vulncheck.sh

# Benchmarks whose numbers the closing notes quote.
bench:
	$(GO) test -run '^$$' -bench . -benchtime 3x -timeout 30m ./internal/placement/ ./internal/sqlite/ ./internal/bench/
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 30m ./internal/e2e/
	$(GO) test -run '^$$' -bench 'Throughput|Typing|Encoding' -benchtime 1x -timeout 30m ./internal/gateway/

# The fleet benchmark (docs/performance.md): N simulated agents against a real
# broker; SCENARIOS=restart,storm (default all), BENCH_FLAGS=... for more.
# As root it installs Debian's jupyterhub for the pages scenario.
N ?= 1000
SCENARIOS ?= all
bench-fleet:
	@if [ "$$(id -u)" = 0 ] && ! dpkg -s jupyterhub >/dev/null 2>&1; then \
		echo "bench-fleet: installing jupyterhub (the pages scenario's side-by-side)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends jupyterhub >/dev/null; fi
	@mkdir -p bin
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/ ./cmd/berth-broker ./cmd/berth-bench
	./bin/berth-bench -n $(N) -scenarios $(SCENARIOS) -broker bin/berth-broker $(BENCH_FLAGS)

# Run each fuzz target briefly (their seed corpora run in `make test` anyway).
FUZZ := FuzzParse:./internal/requirements/ FuzzParse:./internal/permfile/ FuzzParse:./internal/properties/ \
	FuzzDecode:./internal/agentproto/ FuzzBearerToken:./internal/oauth/ FuzzParseINI:./cmd/berth/ \
	FuzzClientMessages:./internal/gateway/ FuzzServerMessages:./internal/gateway/ FuzzLoadConfig:./cmd/berth-broker/ \
	FuzzRegisterAgentHandler:./internal/oauth/ FuzzParse:./internal/jwks/
fuzz:
	@for t in $(FUZZ); do $(GO) test -run '^$$' -fuzz "^$${t%%:*}$$" -fuzztime 20s "$${t#*:}" || exit 1; done

# The main job: a broker on embedded SQLite plus a local agent.
run: build
	./scripts/run.sh

# Debian packages berth-broker, berth-agent and berth-cli in dist/ (DIST=DIR: elsewhere); see packaging/.
DIST ?= dist
DEB_VERSION = $(shell ./packaging/debversion.sh "$(VERSION)")
deb: build
	@mkdir -p $(DIST)
	@for p in berth-broker berth-agent berth-cli; do \
		BERTH_DEB_VERSION="$(DEB_VERSION)" BERTH_DEB_ARCH="$$($(GO) env GOARCH)" \
			$(TOOL) nfpm package --config packaging/$$p.yaml --packager deb --target $(DIST)/ || exit 1; \
	done

clean:
	rm -rf bin dist
