# callvault: two commands matter.
#   make run    the whole system in one process, embedded defaults
#   make test   every check and test, installing and starting what they need

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

TOOLS_BIN := $(or $(CALLVAULT_TOOLS_DIR),$(HOME)/.cache/callvault/tools)/bin
MODULES := proto pkg services/ingest services/policy services/router services/culler services/gateway services/callvault
SERVICES := ingest policy router culler gateway callvault
GO_TEST_FLAGS ?= -race -shuffle=on -count=1 -timeout=20m

.PHONY: bench help run build tools proto proto-check proto-breaking lint vet staticcheck build-modules test test-go test-env test-env-stop clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

run: ## run every service in one process (embedded NATS, local CDS, Redis or in-process fallback)
	@mkdir -p bin
	go build -o bin/callvault ./services/callvault/cmd/callvault
	exec bin/callvault serve

build: ## build every service binary into bin/
	@mkdir -p bin
	@for s in $(SERVICES); do go build -trimpath -o bin/$$s ./services/$$s/cmd/$$s; done
	@ls bin

tools: ## install the pinned tools (buf, protoc plugins, staticcheck, servers) outside the clone
	bash scripts/tools.sh all

proto: ## lint the protos (buf STANDARD) and regenerate the Go code
	bash scripts/tools.sh proto >/dev/null
	cd proto && PATH="$(TOOLS_BIN):$$PATH" buf lint && PATH="$(TOOLS_BIN):$$PATH" buf generate

proto-check: proto proto-breaking ## regenerate and fail if the committed generated code differs or a change breaks the last landed protos
	@if [[ -n "$$(git status --porcelain -- proto)" ]]; then \
		git status --porcelain -- proto; git diff --stat -- proto; \
		echo "proto-check: generated code is out of date; run make proto and commit" >&2; exit 1; fi
	@echo "proto-check: generated code matches"

proto-breaking: ## buf breaking: the protos against those of the last landed commit (merge-base with origin/main or main)
	bash scripts/tools.sh proto >/dev/null
	BUF="$(TOOLS_BIN)/buf" bash scripts/proto-breaking.sh

vet: ## go vet every module on its own
	@for m in $(MODULES); do (cd $$m && GOWORK=off go vet ./...) || exit 1; done
	@echo "vet: ok"

staticcheck: ## staticcheck (pinned) every module on its own
	bash scripts/tools.sh lint >/dev/null
	@for m in $(MODULES); do (cd $$m && GOWORK=off $(TOOLS_BIN)/staticcheck ./...) || exit 1; done
	@echo "staticcheck: ok"

build-modules: ## build each module alone (GOWORK=off) so none leans on the workspace
	@for m in $(MODULES); do (cd $$m && GOWORK=off go build ./...) || exit 1; done
	@echo "build-modules: ok"

lint: vet staticcheck ## vet and staticcheck

test-env: ## start Redis, NATS JetStream and the S3 server on loopback ports of their own
	bash scripts/testenv.sh start

test-env-stop: ## stop them and remove their state
	bash scripts/testenv.sh stop

test-go: ## go test every module against the running test servers
	@source .test-env/env && for m in $(MODULES); do \
		echo "== $$m"; (cd $$m && GOWORK=off go test $(GO_TEST_FLAGS) ./...) || exit 1; done

test: ## everything CI runs: tools, proto-check, builds, vet, staticcheck, all tests on real servers
	bash scripts/test.sh

bench: ## catalog benchmarks on the real Redis: bytes per recording, voicemail and SMS over 1,000,000 each; admissions/s (catalog and whole consumer) beside pipelined SET; list p50/p99; rebuild beside a raw read; offload to S3 and SFTP beside direct write loops; CDRs end to end beside raw JetStream publish, export rows/s, bytes per CDR and per partition
	bash scripts/testenv.sh start >/dev/null
	source .test-env/env && cd pkg && GOWORK=off go test -run '^$$' -bench 'Memory|Admit|List' -benchtime 1x -count 1 -timeout 30m ./catalog/
	source .test-env/env && cd services/policy && GOWORK=off go test -run '^$$' -bench 'Rebuild|AdmitConsumer' -benchtime 1x -count 1 .
	source .test-env/env && cd services/router && GOWORK=off go test -run '^$$' -bench 'Offload' -benchtime 1x -count 1 .
	source .test-env/env && cd services/policy && GOWORK=off go test -run '^$$' -bench 'CdrPipeline' -benchtime 1x -count 1 ./ledger/

clean: ## remove build output and the local data directory
	rm -rf bin data
