# Arbiter — build, test and demo. `make help` lists the targets.
SWIFT ?= swift
STORE ?= ./var/store
PORT ?= 7878
MODEL ?= leads
ROWS ?= 200000

.PHONY: help deps build release test test-sanitize fuzz fuzz-smoke alloc-check demo demo-gbdt quality bench bench-full bench-smoke bench-gbdt bench-soak bench-tls bench-rank bench-route bench-swap bench-allocation clean

help:
	@echo "make deps     install system packages a fresh Debian machine lacks (apt-get)"
	@echo "make build    debug build"
	@echo "make release  release build"
	@echo "make test     install what is missing, build, run every test"
	@echo "make test-sanitize  every test under AddressSanitizer, then ThreadSanitizer (about 3 min; CI runs it)"
	@echo "make fuzz     every decoder of outside input under libFuzzer + ASan, 150 s per target (fuzz-smoke: 10 s each, CI)"
	@echo "make demo     train a lead-grading model, serve it, score leads with the CLI"
	@echo "make alloc-check  allocation counts of the hot paths (ordo-one/benchmark): must stay at bench/alloc/Thresholds"
	@echo "make demo-gbdt  train a LightGBM model in Python, import it, serve it, score with the CLI, compare with LightGBM"
	@echo "make quality  compare held-out AUC with LightGBM on the same CSV (pip installs lightgbm)"
	@echo "make bench       benchmark suite: every scenario against the C floor, Redis, grpc-swift, grpcio+LightGBM"
	@echo "make bench-full  the suite plus latency-throughput sweeps"
	@echo "make bench-smoke 10 s of ping and lead-1 against arbiterd, failing on any error (CI)"
	@echo "make bench-soak  10 min at twice capacity with misbehaving clients: memory, sheds, p99 (after make bench)"
	@echo "make bench-tls   p50/p99 over plain TCP, TLS and mutual TLS with a token, alternating"
	@echo "make bench-gbdt  the tree kernel against xgboost and LightGBM, one thread, same models and rows"
	@echo "make bench-rank  rank-200: a ranking model of 1M items and three tree heads, arbiterd and the grpc-swift peer"
	@echo "make bench-route route-30: a routing model of 30 lenders and two tree heads at 2,000/s, arbiterd and the grpc-swift peer"
	@echo "make bench-swap  swap: lead-1 and rank-200 under a publish a second (poll, RELOAD, rollback, controls, every table changed), a 5% shadow, and a 1 GiB table swapped (about 50 min)"
	@echo "make bench-allocation  the allocation kind: the solver alone (500 x 200, 20,000 x 2,000) and served over the wire"

deps:
	@./scripts/install-deps.sh

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release

test: deps
	@./scripts/test.sh

test-sanitize: deps
	@./scripts/test-sanitize.sh

fuzz: deps
	@./fuzz/run.sh

fuzz-smoke: deps
	@SECONDS_EACH=10 ./fuzz/run.sh

alloc-check: deps
	@cd bench/alloc && swift package --allow-writing-to-package-directory benchmark thresholds check --no-progress

demo: release
	@./scripts/demo.sh "$(STORE)" "$(PORT)" "$(MODEL)"

demo-gbdt: release
	@./scripts/demo-gbdt.sh

quality: release
	@./scripts/quality.sh "$(ROWS)"

bench:
	@./scripts/install-deps.sh bench
	@./bench/run.sh quick

bench-full:
	@./scripts/install-deps.sh bench
	@./bench/run.sh full

bench-smoke: deps
	@./bench/run.sh smoke

bench-soak: deps
	@./bench/soak/run.sh

bench-tls: deps
	@./bench/run.sh tls

bench-gbdt: deps
	@./bench/gbdt/run.sh

bench-rank: deps
	@./bench/rank/run.sh

bench-route: deps
	@./bench/route/run.sh

bench-swap: deps
	@./bench/swap/run.sh

bench-allocation: deps
	@./bench/allocation/run.sh

clean:
	rm -rf .build .build-address .build-thread var bench/.build bench/.work fuzz/.build fuzz/corpus fuzz/artifacts
