#!/usr/bin/env bash
# The one test command (make test, and so CI): installs the pinned tools,
# checks generated code, builds and lints every module on its own, starts
# the real servers and runs every test against them, then stops them.
set -euo pipefail
cd "$(dirname "$0")/.."

start=$(date +%s)
step() { echo; echo "==> $* ($(( $(date +%s) - start ))s)"; }

step "tools"
bash scripts/tools.sh all >/dev/null

step "proto-check"
make --no-print-directory proto-check

step "build each module alone"
make --no-print-directory build-modules

step "vet"
make --no-print-directory vet

step "staticcheck"
make --no-print-directory staticcheck

step "test servers"
trap 'bash scripts/testenv.sh stop' EXIT
bash scripts/testenv.sh start

step "go test ${GO_TEST_FLAGS:--race -shuffle=on -count=1}"
make --no-print-directory test-go

step "done in $(( $(date +%s) - start ))s"
