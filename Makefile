# forkd — `make` lists the targets.

# Go may not be on PATH (it lives in /usr/local/go/bin on fresh machines).
GO ?= $(shell command -v go || echo /usr/local/go/bin/go)
GODIR := $(patsubst %/,%,$(dir $(GO)))
ifneq ($(findstring /,$(GO)),)
# Tools that run go themselves (staticcheck, tests that build binaries) find it too.
export PATH := $(GODIR):$(PATH)
endif
GOFMT ?= $(shell command -v gofmt || echo $(GODIR)/gofmt)
GOBIN_DIR = $(shell $(GO) env GOPATH)/bin
STATICCHECK ?= $(GOBIN_DIR)/staticcheck
NFPM ?= $(shell command -v nfpm || echo $(GOBIN_DIR)/nfpm)
# nfpm releases after v2.45.2 need modules from go.digitalxero.dev, which the
# Go module proxy refuses (403): pin the last release that installs.
NFPM_VERSION ?= v2.45.2
VERSION ?= $(or $(shell git describe --tags --match 'v[0-9]*' 2>/dev/null | sed 's/^v//'),0.0.0)
ARCH ?= $(shell $(GO) env GOARCH)
# forkd --version prints VERSION.
LDFLAGS := -X github.com/forkd/forkd/internal/master.Version=$(VERSION)
# How long `make fuzz` fuzzes each target.
FUZZTIME ?= 60s

# Debian packages the tests need (a private dbus-daemon, systemd-nspawn, ip, curl,
# wrk for the autoscaling test, tmux for the status page, promtool, the package
# linters, etcd) and the ones the benchmarks need.
TEST_PACKAGES := dbus systemd-container iproute2 curl rpm groff-base man-db lintian rpmlint cpio python3-uvicorn python3-fastapi python3-apscheduler wrk tmux prometheus etcd-server
# What e2e's virtual machine boots with (x86_64 only; installed without their
# recommends, which would bring a desktop's emulator and AppArmor): qemu, a
# static busybox for its initramfs, and Debian's kernel.
VM_PACKAGES := qemu-system-x86 busybox-static linux-image-amd64
BENCH_PACKAGES := gunicorn wrk

# Binaries: name:package. `build` skips those whose package has no sources yet.
BINARIES := forkd:./cmd/forkd forkctl:./cmd/forkctl forkd-demo:./examples/demo forkd-cluster:./cmd/forkd-cluster forkd-metrics:./cmd/forkd-metrics

.DEFAULT_GOAL := help
.PHONY: help build test deps run lint fuzz bench bench-compare e2e deb rpm clean

# apt-ensure is a shell snippet that installs the Debian packages $(1) that are
# missing, as root, with apt-get's options $(2), saying what it does; it says
# nothing when all are present, and only warns when not root or not on Debian
# (tests that need them skip).
define apt-ensure
missing=""; \
if command -v dpkg-query >/dev/null 2>&1; then \
	for p in $(1); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
else \
	echo "$@: no dpkg-query (not Debian?); make sure these are installed: $(1)"; \
fi; \
if [ -n "$$missing" ]; then \
	if [ "$$(id -u)" = 0 ]; then \
		echo "$@: installing missing packages:$$missing"; \
		echo "+ apt-get update"; \
		DEBIAN_FRONTEND=noninteractive apt-get update -q || exit 1; \
		echo "+ apt-get install -y $(2)$$missing"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(2)$$missing || exit 1; \
	else \
		echo "$@: missing packages:$$missing (run 'make $@' as root to install them)"; \
	fi; \
fi
endef

help: ## list the targets
	@echo "Targets:"
	@awk 'BEGIN { FS = ":.*## " } /^[a-z][a-z0-9 -]*:.*## / { printf "  %-7s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

# Static binaries (no cgo): no dynamic loader or libc start-up on every exec.
build: ## build bin/forkd, bin/forkctl, bin/forkd-demo, bin/forkd-cluster and bin/forkd-metrics (those whose sources exist)
	@mkdir -p bin
	@set -e; for b in $(BINARIES); do \
		name=$${b%%:*}; pkg=$${b#*:}; \
		if ls $$pkg/*.go >/dev/null 2>&1; then \
			echo "CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS)' -o bin/$$name $$pkg"; \
			CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS)' -o bin/$$name $$pkg; \
		else \
			echo "build: skipping bin/$$name: no sources in $$pkg yet"; \
		fi; \
	done

test: deps ## run all tests with the race detector
	$(GO) test -race -count=1 -timeout 20m ./...

deps: ## install the Debian packages the tests need (as root, only if missing)
	@$(call apt-ensure,$(TEST_PACKAGES))
	@if [ "$$(dpkg --print-architecture 2>/dev/null)" = amd64 ]; then \
		$(call apt-ensure,$(VM_PACKAGES),--no-install-recommends); \
	fi

run: build ## build, then run bin/forkd with examples/demo.toml (Ctrl-C stops it)
	@test -x bin/forkd || { echo "run: bin/forkd was not built (no cmd/forkd sources yet)"; exit 1; }
	bin/forkd --config examples/demo.toml

lint: ## gofmt (must list nothing), go vet, staticcheck (installed if missing)
	@echo "$(GOFMT) -l ."; out=$$($(GOFMT) -l .); \
	if [ -n "$$out" ]; then echo "lint: not gofmt'ed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@test -x $(STATICCHECK) || { \
		echo "+ $(GO) install honnef.co/go/tools/cmd/staticcheck@latest"; \
		$(GO) install honnef.co/go/tools/cmd/staticcheck@latest; }
	$(STATICCHECK) ./...

# Every `func FuzzX(f *testing.F)` in a _test.go file, run one at a time
# (go test -fuzz takes one target of one package). Their seed corpora
# (testdata/fuzz/FuzzX) run as plain tests in `make test`.
fuzz: ## fuzz each parser fed from outside in turn, FUZZTIME each (default 60s)
	@set -e; grep -r --include='*_test.go' -o '^func Fuzz[A-Za-z0-9_]*' . | sort | \
	while IFS=: read -r file fn; do \
		name=$${fn#func }; pkg=./$$(dirname $${file#./}); \
		echo "$(GO) test -run '^$$' -fuzz '^$$name\$$' -fuzztime $(FUZZTIME) $$pkg"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $$pkg </dev/null; \
	done

bench: ## benchmarks side by side with Gunicorn (installs gunicorn and wrk as root)
	@if [ ! -d bench ]; then echo "bench: no bench/ directory yet, nothing to run"; exit 0; fi; \
	$(call apt-ensure,$(BENCH_PACKAGES)); \
	echo "$(GO) test -run '^$$' -bench . -benchtime 1x ./bench/..."; \
	$(GO) test -run '^$$' -bench . -benchtime 1x ./bench/...

bench-compare: ## make bench on BASE=<commit> and on this tree side by side (ROUNDS=1, BENCH=.)
	@test -n "$(BASE)" || { echo "bench-compare: set BASE=<commit>, e.g. make bench-compare BASE=HEAD~3"; exit 1; }
	@$(call apt-ensure,$(BENCH_PACKAGES))
	bench/compare/compare.sh $(BASE) $(or $(ROUNDS),1) '$(or $(BENCH),.)'

e2e: deps ## end-to-end tests against real systemd (nspawn) and D-Bus; run as root
	@if ! find e2e -name '*_test.go' 2>/dev/null | grep -q .; then echo "e2e: no tests in e2e/ yet"; exit 1; fi
	$(GO) test -count=1 -v ./e2e/...

# Packaged binaries: stripped (-s -w; the symbols help no one without the
# sources), built for ARCH (GOARCH; `make deb rpm ARCH=arm64` cross-builds),
# into dist/bin, so that bin/ stays this machine's.
deb rpm: ## build the .deb / .rpm for ARCH (default: this machine's) into dist/ with nfpm
	@if [ ! -f packaging/nfpm.yaml ]; then echo "$@: not yet: packaging/nfpm.yaml does not exist"; exit 1; fi
	@test -x $(NFPM) || { \
		echo "+ $(GO) install github.com/goreleaser/nfpm/v2/cmd/nfpm@$(NFPM_VERSION)"; \
		$(GO) install github.com/goreleaser/nfpm/v2/cmd/nfpm@$(NFPM_VERSION); }
	@mkdir -p dist/bin dist/man
	@set -e; for b in $(BINARIES); do \
		name=$${b%%:*}; pkg=$${b#*:}; \
		echo "CGO_ENABLED=0 GOARCH=$(ARCH) $(GO) build -trimpath -ldflags '-s -w $(LDFLAGS)' -o dist/bin/$$name $$pkg"; \
		CGO_ENABLED=0 GOARCH=$(ARCH) $(GO) build -trimpath -ldflags '-s -w $(LDFLAGS)' -o dist/bin/$$name $$pkg; \
	done
	@for m in packaging/man/*.[1-8]; do \
		echo "gzip -9n < $$m > dist/man/$${m##*/}.gz"; \
		gzip -9n < $$m > dist/man/$${m##*/}.gz; \
	done
	packaging/changelog.sh $(VERSION) 1 'forkd developers <forkd@users.noreply.github.com>' > dist/changelog.yml
	VERSION=$(VERSION) ARCH=$(ARCH) $(NFPM) package --config packaging/nfpm.yaml --packager $@ --target dist/

clean: ## remove bin/ and dist/
	rm -rf bin dist
