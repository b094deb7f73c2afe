# sekisho — `make demo` runs the demo on loopback, `make demo-ha` the same as
# three nodes behind HAProxy, `make test` runs every test.
GO          ?= go
STATICCHECK := bin/staticcheck
SRC         := $(shell find cmd internal broker session recording notify web -name '*.go' -not -name '*_test.go') go.mod go.sum \
	$(shell find web/templates web/assets -type f -not -path 'web/assets/vendor/*' 2>/dev/null)
# The web console's front-end packages come from npm at build time, pinned
# by web/package-lock.json, and only their built files are copied into
# web/assets/vendor (git-ignored), which the binary embeds.
VENDOR      := $(addprefix web/assets/vendor/,asciinema-player.min.js asciinema-player.css asciinema-player.LICENSE)

.PHONY: all build demo demo-ha test unit e2e bench bench-go lint fuzz hardening clean web-vendor screenshots

all: build

build: bin/sekisho bin/devvault bin/oidcprovider

# -buildvcs=auto: the binary knows its version and commit (sekisho
# version, the sekisho_build_info metric) when built in a git checkout,
# whatever GOFLAGS says; outside one it builds without them. Git's log of
# HEAD changes at every commit and checkout, so that the binary is built
# again and names the commit it was built from.
GIT_HEAD_LOG := $(wildcard $(shell git rev-parse --git-path logs/HEAD 2>/dev/null))
bin/sekisho: $(SRC) $(VENDOR) $(GIT_HEAD_LOG)
	$(GO) build -buildvcs=auto -o $@ ./cmd/sekisho

web-vendor: $(VENDOR)

# npm ci installs exactly the lock file's versions (integrity-checked) and
# runs no package scripts; cp gives the copies a new time, newer than the lock.
$(VENDOR) &: web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund --ignore-scripts
	mkdir -p web/assets/vendor
	cp web/node_modules/asciinema-player/dist/bundle/asciinema-player.min.js \
		web/node_modules/asciinema-player/dist/bundle/asciinema-player.css web/assets/vendor/
	cp web/node_modules/asciinema-player/LICENSE web/assets/vendor/asciinema-player.LICENSE

# The dev Vault is its own Go module (tools/devvault), so the main module
# does not inherit Vault's dependency graph. The first build takes minutes.
bin/devvault: tools/devvault/main.go tools/devvault/go.mod tools/devvault/go.sum
	cd tools/devvault && $(GO) build -o ../../bin/devvault .

# A real OpenID provider for the console's single sign-on tests: zitadel/oidc's
# op package with test users, in its own Go module (tools/oidcprovider).
bin/oidcprovider: tools/oidcprovider/main.go tools/oidcprovider/go.mod tools/oidcprovider/go.sum
	cd tools/oidcprovider && $(GO) build -o ../../bin/oidcprovider .

# A real MinIO server for the S3 recording store tests, built from the
# module proxy (pinned: the project has no tags). The first build takes minutes.
MINIO_VERSION := v0.0.0-20260212201848-7aac2a2c5b7c
bin/minio:
	GOBIN=$(CURDIR)/bin $(GO) install github.com/minio/minio@$(MINIO_VERSION)

$(STATICCHECK):
	GOBIN=$(CURDIR)/bin $(GO) install honnef.co/go/tools/cmd/staticcheck@v0.8.2

# What a fresh Debian machine lacks for the demo or for the tests
# (OpenSSH, rsync, Node.js with npm, tmux, Chromium, ...), installed first
# and only where missing: with everything present nothing runs.
.PHONY: deps-demo deps-test deps-ha
deps-demo deps-test deps-ha: deps-%:
	GO=$(GO) tools/install-deps.sh $*

demo: deps-demo build
	bin/sekisho demo

# Three equal nodes on PostgreSQL (Debian's, a fresh cluster run as the
# postgres user), recordings in MinIO, behind HAProxy (PROXY protocol v2)
# on 127.0.0.1:2222; files under .demo-ha/.
# DEMO_HA_FLAGS adds flags (.ci/run: other ports and directory).
demo-ha: deps-ha build bin/minio
	bin/sekisho demo --ha $(DEMO_HA_FLAGS)

# Everything: formatting, vet, staticcheck, unit tests and the end-to-end
# tests against real OpenSSH, a real sshd and the real dev Vault.
test: deps-test build lint bin/minio
	$(GO) test -race -count=1 ./...

unit:
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v /e2e)

e2e: build bin/minio
	$(GO) test -race -count=1 -v ./e2e/

# The README's pictures of the web console: its end-to-end browser tests
# save PNGs of the main pages, with real sessions and requests behind them.
screenshots: build
	SEKISHO_SCREENSHOTS=$(CURDIR)/docs/screenshots $(GO) test -count=1 -run '^TestWeb[A-Z]' ./e2e/

# Benchmarks: speed targets live here, never in timed tests. The last
# step compares sekisho with ssh -J and a direct connection on this machine,
# then logins through one node on SQLite, one on PostgreSQL and three
# sharing PostgreSQL (docs/BENCHMARKS.md), and writes
# bench/results/latest.json; it takes about twelve minutes on two cores.
# Quick run: make bench BENCH_BYTES=67108864
# BENCH_FLAGS='-setup-runs 10 -reps 1 -cluster-sessions 100 -out /tmp/bench.json';
# the several nodes alone: go run ./bench/cmd/sekisho-bench -cluster-only.
# The replay start is measured on a 1 GiB recording (REPLAY_BENCH_BYTES).
# make bench-go runs only the micro-benchmarks of the recorder and the
# relay (allocations included); compare runs with benchstat, e.g.
# make bench-go BENCH_GO_FLAGS=-count=8 > new.txt.
BENCHTIME ?= 5x
BENCH_FLAGS ?=
REPLAY_BENCH_BYTES ?= 1073741824
BENCH_GO_FLAGS ?=
bench: build bench-go
	$(GO) test -run=NONE -bench=. -benchtime=$(BENCHTIME) ./e2e/
	SEKISHO_BENCH_BYTES=$(REPLAY_BENCH_BYTES) $(GO) test -run=NONE -bench=ReplayStart -benchtime=$(BENCHTIME) -timeout=30m ./recording/
	$(GO) run ./bench/cmd/sekisho-bench $(BENCH_FLAGS)

bench-go:
	$(GO) test -run=NONE -bench=Recorder -benchmem $(BENCH_GO_FLAGS) ./recording/
	$(GO) test -run=NONE -bench='Relay|CopyRecorded|InteractiveSessionMemory|InteractiveEcho' -benchmem $(BENCH_GO_FLAGS) ./session/

lint: $(STATICCHECK)
	@fmt=$$(gofmt -l cmd internal broker session recording notify web e2e bench tools); if [ -n "$$fmt" ]; then echo "gofmt needed: $$fmt"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

# Every fuzz target, as package:Target. make fuzz runs each for FUZZTIME.
FUZZ_TARGETS := \
	session:FuzzParseLogin session:FuzzSFTPVerdict session:FuzzSFTPObserver \
	session:FuzzSCPObserver session:FuzzSplitCommand session:FuzzTransferCommand \
	recording:FuzzSanitizer recording:FuzzCastReader recording:FuzzSeekIndex \
	recording:FuzzAppendJSONString recording:FuzzVerify internal/node:FuzzParseConfig \
	internal/node:FuzzProxyHeader session:FuzzAuthKeys session:FuzzSecondFactor \
	recording:FuzzSessionText broker/sqlitestore:FuzzTextQuery
FUZZTIME ?= 30s
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		GO=$(GO) tools/fuzz-one.sh $${t%%:*} $${t#*:} $(FUZZTIME); \
	done

# The hardening suite: every test, including the long ones that make test
# skips (SEKISHO_HARDENING=1: 10,000-connection floods, kill -9 at random
# points, Vault faults), then every fuzz target for HARDENING_FUZZTIME.
# The figures the tests report become the table in SECURITY.md; the raw
# go test -json output stays in .hardening/. Everything runs at once on a
# machine of two cores, so the browser's deadlines are stretched three
# times (the figures say how long things took). About 13 minutes.
HARDENING_FUZZTIME ?= 20s
hardening: build bin/minio
	@rm -rf .hardening && mkdir -p .hardening
	SEKISHO_HARDENING=1 SEKISHO_TEST_TIMEOUT_SCALE=3 $(GO) test -count=1 -json -timeout=60m ./... 2>&1 | \
		$(GO) run ./tools/hardening-table -record .hardening/tests.json
	@set -e; for t in $(FUZZ_TARGETS); do \
		GO=$(GO) tools/fuzz-one.sh $${t%%:*} $${t#*:} $(HARDENING_FUZZTIME) .hardening/fuzz.json; \
	done
	$(GO) run ./tools/hardening-table -security SECURITY.md .hardening/tests.json .hardening/fuzz.json

clean:
	rm -rf bin .demo .demo-ha .hardening web/assets/vendor web/node_modules
