#!/usr/bin/env bash
# Installs the pinned tools the build and the tests need. Go tools are built
# through the Go module proxy into a cache outside the clone, so a second
# checkout on the same machine reuses them; Debian packages come from apt.
set -euo pipefail

TOOLS_DIR="${CALLVAULT_TOOLS_DIR:-${HOME}/.cache/callvault/tools}"
BIN="${TOOLS_DIR}/bin"
mkdir -p "${BIN}"

# name|module@version|binary
GO_TOOLS=(
  "buf|github.com/bufbuild/buf/cmd/buf@v1.75.0|buf"
  "protoc-gen-go|google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12|protoc-gen-go"
  "protoc-gen-go-grpc|google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2|protoc-gen-go-grpc"
  "staticcheck|honnef.co/go/tools/cmd/staticcheck@v0.8.2|staticcheck"
  "versitygw|github.com/versity/versitygw/cmd/versitygw@v1.8.0|versitygw"
  "nats-server|github.com/nats-io/nats-server/v2@v2.15.2|nats-server"
)

install_go_tool() {
  local name="$1" spec="$2" bin="$3"
  local stamp="${TOOLS_DIR}/.${name}.version"
  if [[ -x "${BIN}/${bin}" && -f "${stamp}" && "$(cat "${stamp}")" == "${spec}" ]]; then
    return 0
  fi
  echo "tools: installing ${spec}" >&2
  GOBIN="${BIN}" GOFLAGS=-mod=mod GOWORK=off go install "${spec}"
  echo "${spec}" >"${stamp}"
}

install_apt() {
  local missing=()
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  [[ -x /usr/sbin/sshd ]] || missing+=(openssh-server)
  if ((${#missing[@]} == 0)); then
    return 0
  fi
  if [[ "$(id -u)" != 0 ]] && ! command -v sudo >/dev/null 2>&1; then
    echo "tools: need ${missing[*]} and cannot install them without root" >&2
    return 1
  fi
  local sudo=""
  [[ "$(id -u)" == 0 ]] || sudo="sudo"
  echo "tools: installing ${missing[*]} from Debian packages" >&2
  DEBIAN_FRONTEND=noninteractive ${sudo} apt-get update -qq
  DEBIAN_FRONTEND=noninteractive ${sudo} apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The package starts its own daemons on the standard ports; the tests
  # start their own on ports of their own, so stop the stock ones.
  ${sudo} service redis-server stop >/dev/null 2>&1 || true
  ${sudo} service ssh stop >/dev/null 2>&1 || true
}

what="${1:-all}"
case "${what}" in
  proto)
    for t in "${GO_TOOLS[@]:0:3}"; do IFS='|' read -r n s b <<<"${t}"; install_go_tool "$n" "$s" "$b"; done ;;
  lint)
    IFS='|' read -r n s b <<<"${GO_TOOLS[3]}"; install_go_tool "$n" "$s" "$b" ;;
  servers)
    install_apt
    for t in "${GO_TOOLS[@]:4:2}"; do IFS='|' read -r n s b <<<"${t}"; install_go_tool "$n" "$s" "$b"; done ;;
  all)
    install_apt
    for t in "${GO_TOOLS[@]}"; do IFS='|' read -r n s b <<<"${t}"; install_go_tool "$n" "$s" "$b"; done ;;
  *) echo "usage: $0 [all|proto|lint|servers]" >&2; exit 2 ;;
esac
echo "${BIN}"
