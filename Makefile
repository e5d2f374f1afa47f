# coreforge — the few targets a newcomer needs. `make help` lists them.
SHELL := /usr/bin/env bash
CARGO ?= cargo

.PHONY: properties help demo demo-stop test bench build crds fmt lint cluster-up cluster-down cluster-status cluster-env

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

demo: ## Run coreforge end to end on the local environment (starts it if needed)
	tests/demo.sh

demo-stop: ## Stop the demo's controller and the local environment
	tests/demo-stop.sh

test: ## Run every test: lint, unit, and integration/e2e on the local environment
	tests/run.sh

bench: ## Measure coreforge at scale against a floor (BENCH_N="100 1000"); table in target/bench/
	tests/bench.sh

properties: ## Check the decision core's invariants on 1,000,000 random walks (release build; PROPERTY_CASES=N)
	COREFORGE_PROPERTY_CASES=$${PROPERTY_CASES:-1000000} $(CARGO) test --locked --release --lib -- --exact controller::decide::tests::props::the_decision_core_keeps_its_invariants_on_random_walks --nocapture

build: ## Build the coreforge binary
	$(CARGO) build --locked

crds: ## Regenerate crds/ from the Rust types, their copies, and the chart's copies of deploy/argocd's health checks
	$(CARGO) run --locked --quiet -- crd --output-dir crds
	cp crds/*.yaml charts/coreforge/files/crds/
	cp crds/*.yaml deploy/base/crds/
	for kind in CoreBuild ImageRelease; do mkdir -p charts/coreforge/files/argocd/coreforge.dev/$$kind && cp deploy/argocd/coreforge.dev/$$kind/health.lua charts/coreforge/files/argocd/coreforge.dev/$$kind/; done

fmt: ## Format the Rust code
	$(CARGO) fmt

lint: ## cargo fmt --check and clippy with warnings as errors
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

cluster-up: ## Build (once, cached) and start the local control plane on loopback
	tests/cluster/up.sh

cluster-down: ## Stop the local control plane and remove its state
	tests/cluster/down.sh

cluster-status: ## Show what the local control plane is running
	tests/cluster/status.sh

cluster-env: ## Print `export KUBECONFIG=...` for the local control plane
	@tests/cluster/env.sh
