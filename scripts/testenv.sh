#!/usr/bin/env bash
# Starts (or stops) the real servers the integration tests talk to, each on
# a loopback port of its own: Redis, NATS JetStream and an S3-compatible
# server. Writes their addresses to .test-env/env for the test run.
set -euo pipefail

cd "$(dirname "$0")/.."
STATE="${CALLVAULT_TEST_STATE:-$PWD/.test-env}"
REDIS_PORT="${CALLVAULT_TEST_REDIS_PORT:-16379}"
NATS_PORT="${CALLVAULT_TEST_NATS_PORT:-14222}"
S3_PORT="${CALLVAULT_TEST_S3_PORT:-17070}"
S3_ACCESS=callvault-test
S3_SECRET=callvault-test-secret

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  local name="$1" port="$2" log="$3"
  for _ in $(seq 1 150); do
    port_open "${port}" && return 0
    sleep 0.2
  done
  echo "testenv: ${name} did not open 127.0.0.1:${port}; its log:" >&2
  tail -20 "${log}" >&2 || true
  return 1
}

start() {
  local bin
  bin="$(bash scripts/tools.sh servers | tail -1)"
  mkdir -p "${STATE}/nats" "${STATE}/s3"
  if ! port_open "${REDIS_PORT}"; then
    redis-server --port "${REDIS_PORT}" --bind 127.0.0.1 --save "" --appendonly no \
      --daemonize yes --pidfile "${STATE}/redis.pid" --logfile "${STATE}/redis.log"
  fi
  if ! port_open "${NATS_PORT}"; then
    nohup "${bin}/nats-server" -a 127.0.0.1 -p "${NATS_PORT}" -js -sd "${STATE}/nats" \
      >"${STATE}/nats.log" 2>&1 &
    echo $! >"${STATE}/nats.pid"
  fi
  if ! port_open "${S3_PORT}"; then
    nohup "${bin}/versitygw" --access "${S3_ACCESS}" --secret "${S3_SECRET}" \
      --port "127.0.0.1:${S3_PORT}" --quiet posix "${STATE}/s3" >"${STATE}/s3.log" 2>&1 &
    echo $! >"${STATE}/s3.pid"
  fi
  wait_port redis "${REDIS_PORT}" "${STATE}/redis.log"
  wait_port nats "${NATS_PORT}" "${STATE}/nats.log"
  wait_port s3 "${S3_PORT}" "${STATE}/s3.log"
  cat >"${STATE}/env" <<ENV
export CALLVAULT_TEST_REDIS_URL=redis://127.0.0.1:${REDIS_PORT}/0
export CALLVAULT_TEST_NATS_URL=nats://127.0.0.1:${NATS_PORT}
export CALLVAULT_TEST_S3_ENDPOINT=http://127.0.0.1:${S3_PORT}
export CALLVAULT_TEST_S3_ACCESS_KEY=${S3_ACCESS}
export CALLVAULT_TEST_S3_SECRET_KEY=${S3_SECRET}
ENV
  echo "testenv: redis :${REDIS_PORT}, nats :${NATS_PORT}, s3 :${S3_PORT} (env in ${STATE}/env)"
}

stop() {
  for f in nats s3; do
    if [[ -f "${STATE}/${f}.pid" ]]; then
      kill "$(cat "${STATE}/${f}.pid")" 2>/dev/null || true
      rm -f "${STATE}/${f}.pid"
    fi
  done
  if [[ -f "${STATE}/redis.pid" ]]; then
    kill "$(cat "${STATE}/redis.pid")" 2>/dev/null || true
  fi
  sleep 0.5
  rm -rf "${STATE}"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
