#!/usr/bin/env bash
# Starts (or stops) the real servers the integration tests talk to, each on
# a loopback port of its own: Redis, NATS JetStream, an S3-compatible
# server and an OpenSSH SFTP server. Writes their addresses to .test-env/env
# for the test run.
set -euo pipefail

cd "$(dirname "$0")/.."
STATE="${CALLVAULT_TEST_STATE:-$PWD/.test-env}"
REDIS_PORT="${CALLVAULT_TEST_REDIS_PORT:-16379}"
# The listpack limits deployments set (deploy/redis/redis.conf), so tests
# and benchmarks measure the catalog as it runs.
REDIS_LISTPACK=(--hash-max-listpack-entries 512 --hash-max-listpack-value 256 --zset-max-listpack-entries 1024)
NATS_PORT="${CALLVAULT_TEST_NATS_PORT:-14222}"
S3_PORT="${CALLVAULT_TEST_S3_PORT:-17070}"
# Three masters of a Redis Cluster (no replicas), for the cluster tests.
CLUSTER_PORTS="${CALLVAULT_TEST_REDIS_CLUSTER_PORTS:-17001 17002 17003}"
S3_ACCESS=callvault-test
S3_SECRET=callvault-test-secret
SFTP_PORT="${CALLVAULT_TEST_SFTP_PORT:-17022}"
# sshd re-executes itself for every connection and so insists on being
# started by its absolute path.
SSHD_BIN=/usr/sbin/sshd

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

cluster_ok() { redis-cli -p "${1}" cluster info 2>/dev/null | grep -q '^cluster_state:ok'; }

# start_cluster starts the cluster nodes that are not running and joins
# them into one cluster unless they already form one.
start_cluster() {
  local first="" nodes=() p
  mkdir -p "${STATE}/cluster"
  for p in ${CLUSTER_PORTS}; do
    first="${first:-$p}"
    nodes+=("127.0.0.1:${p}")
    if ! port_open "${p}"; then
      mkdir -p "${STATE}/cluster/${p}"
      redis-server --port "${p}" --bind 127.0.0.1 --save "" --appendonly no "${REDIS_LISTPACK[@]}" \
        --cluster-enabled yes --cluster-config-file "${STATE}/cluster/${p}/nodes.conf" --dir "${STATE}/cluster/${p}" \
        --daemonize yes --pidfile "${STATE}/cluster/${p}.pid" --logfile "${STATE}/cluster/${p}.log"
    fi
  done
  for p in ${CLUSTER_PORTS}; do wait_port "redis cluster node" "${p}" "${STATE}/cluster/${p}.log"; done
  if ! cluster_ok "${first}"; then
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >"${STATE}/cluster/create.log"
  fi
  for _ in $(seq 1 100); do
    cluster_ok "${first}" && return 0
    sleep 0.1
  done
  echo "testenv: the Redis Cluster on ${CLUSTER_PORTS} did not become ready" >&2
  return 1
}

cluster_url() {
  local p url=""
  for p in ${CLUSTER_PORTS}; do url="${url:+${url},}127.0.0.1:${p}"; done
  echo "redis-cluster://${url}"
}

fingerprint() { ssh-keygen -lf "$1" | awk '{print $2}'; }

# start_sshd runs Debian's OpenSSH server as whoever runs this script: its
# own config, host key and client key under ${STATE}/sshd, public-key login
# for that one user, the SFTP subsystem only. Run by a user other than root
# it can only log that user in, which is all the tests need.
start_sshd() {
  mkdir -p "${STATE}/sshd" "${STATE}/sftp-root"
  local dir root user
  # Every path sshd is given must be absolute: it changes to / when it
  # daemonizes, and reads a relative AuthorizedKeysFile as relative to the
  # user's home.
  dir="$(cd "${STATE}/sshd" && pwd)"
  root="$(cd "${STATE}/sftp-root" && pwd)"
  user="$(id -un)"
  if port_open "${SFTP_PORT}"; then
    if [[ -f "${dir}/sshd.pid" ]] && kill -0 "$(cat "${dir}/sshd.pid")" 2>/dev/null; then
      return 0
    fi
    echo "testenv: 127.0.0.1:${SFTP_PORT} is taken by a server this state dir did not start" >&2
    return 1
  fi
  [[ -f "${dir}/host_ed25519" ]] || ssh-keygen -q -t ed25519 -N "" -C callvault-test-host -f "${dir}/host_ed25519"
  # A key no server holds, for the tests that expect a pinned key to be refused.
  [[ -f "${dir}/other_host_ed25519" ]] || ssh-keygen -q -t ed25519 -N "" -C callvault-test-other -f "${dir}/other_host_ed25519"
  [[ -f "${dir}/client_ed25519" ]] || ssh-keygen -q -t ed25519 -N "" -C callvault-test-client -f "${dir}/client_ed25519"
  echo "restrict $(cat "${dir}/client_ed25519.pub")" >"${dir}/authorized_keys"
  cat >"${dir}/sshd_config" <<CONF
ListenAddress 127.0.0.1:${SFTP_PORT}
HostKey ${dir}/host_ed25519
PidFile ${dir}/sshd.pid
AuthorizedKeysFile ${dir}/authorized_keys
AllowUsers ${user}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
DisableForwarding yes
PermitTTY no
PrintMotd no
Subsystem sftp internal-sftp
# Relative paths start in the upload root, as they start in a login
# directory on a tenant's server.
ForceCommand internal-sftp -d ${root}
MaxStartups 100:30:200
LogLevel VERBOSE
CONF
  # Run as root, sshd privilege-separates into its compiled-in empty
  # directory, which the Debian package would otherwise create at boot.
  if [[ "$(id -u)" == 0 ]]; then
    mkdir -p /run/sshd
    chmod 0755 /run/sshd
  fi
  "${SSHD_BIN}" -t -f "${dir}/sshd_config"
  "${SSHD_BIN}" -f "${dir}/sshd_config" -E "${dir}/sshd.log"
  wait_port sshd "${SFTP_PORT}" "${dir}/sshd.log"
}

sshd_env() {
  local dir root
  dir="$(cd "${STATE}/sshd" && pwd)"
  root="$(cd "${STATE}/sftp-root" && pwd)"
  cat <<ENV
export CALLVAULT_TEST_SFTP_ADDR=127.0.0.1:${SFTP_PORT}
export CALLVAULT_TEST_SFTP_USER=$(id -un)
export CALLVAULT_TEST_SFTP_KEY=${dir}/client_ed25519
export CALLVAULT_TEST_SFTP_HOSTKEY=$(fingerprint "${dir}/host_ed25519.pub")
export CALLVAULT_TEST_SFTP_OTHER_HOSTKEY=$(fingerprint "${dir}/other_host_ed25519.pub")
export CALLVAULT_TEST_SFTP_ROOT=${root}
ENV
}

stop_sshd() {
  if [[ -f "${STATE}/sshd/sshd.pid" ]]; then
    kill "$(cat "${STATE}/sshd/sshd.pid")" 2>/dev/null || true
    rm -f "${STATE}/sshd/sshd.pid"
  fi
}

start() {
  local bin
  bin="$(bash scripts/tools.sh servers | tail -1)"
  mkdir -p "${STATE}/nats" "${STATE}/s3"
  if ! port_open "${REDIS_PORT}"; then
    redis-server --port "${REDIS_PORT}" --bind 127.0.0.1 --save "" --appendonly no "${REDIS_LISTPACK[@]}" \
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
  start_cluster
  start_sshd
  # A server left running from before gets the limits too.
  local p
  for p in "${REDIS_PORT}" ${CLUSTER_PORTS}; do
    redis-cli -p "${p}" config set "${REDIS_LISTPACK[@]#--}" >/dev/null
  done
  cat >"${STATE}/env" <<ENV
export CALLVAULT_TEST_REDIS_URL=redis://127.0.0.1:${REDIS_PORT}/0
export CALLVAULT_TEST_REDIS_CLUSTER_URL=$(cluster_url)
export CALLVAULT_TEST_NATS_URL=nats://127.0.0.1:${NATS_PORT}
export CALLVAULT_TEST_S3_ENDPOINT=http://127.0.0.1:${S3_PORT}
export CALLVAULT_TEST_S3_ACCESS_KEY=${S3_ACCESS}
export CALLVAULT_TEST_S3_SECRET_KEY=${S3_SECRET}
ENV
  sshd_env >>"${STATE}/env"
  echo "testenv: redis :${REDIS_PORT}, redis cluster $(cluster_url), nats :${NATS_PORT}, s3 :${S3_PORT}, sftp :${SFTP_PORT} (env in ${STATE}/env)"
}

stop_cluster() {
  local p
  for p in ${CLUSTER_PORTS}; do
    if [[ -f "${STATE}/cluster/${p}.pid" ]]; then
      kill "$(cat "${STATE}/cluster/${p}.pid")" 2>/dev/null || true
    fi
  done
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
  stop_cluster
  stop_sshd
  sleep 0.5
  rm -rf "${STATE}"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  # Only the Redis Cluster (with the other servers already running).
  cluster) start_cluster && echo "export CALLVAULT_TEST_REDIS_CLUSTER_URL=$(cluster_url)" ;;
  cluster-stop) stop_cluster ;;
  # Only the SFTP server; prints its variables.
  sshd) start_sshd && sshd_env ;;
  sshd-stop) stop_sshd ;;
  *) echo "usage: $0 start|stop|cluster|cluster-stop|sshd|sshd-stop" >&2; exit 2 ;;
esac
