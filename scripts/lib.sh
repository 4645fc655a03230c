# Shared by scripts/dev-up, scripts/test and .ci/run: make sure PostgreSQL and Redis answer,
# starting them when this machine can, and saying exactly what to do when it cannot.

PGHOST_ADDR="${PGHOST_ADDR:-127.0.0.1}"
PGPORT_NUM="${PGPORT_NUM:-5432}"
REDIS_PORT_NUM="${REDIS_PORT_NUM:-6379}"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

postgres_up() { pg_isready -q -h "$PGHOST_ADDR" -p "$PGPORT_NUM" 2>/dev/null; }
redis_up() { [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT_NUM" ping 2>/dev/null)" = "PONG" ]; }

wait_for() { # wait_for <seconds> <command...>
  local seconds=$1; shift
  for _ in $(seq 1 $((seconds * 4))); do "$@" && return 0; sleep 0.25; done
  return 1
}

ensure_postgres() {
  postgres_up && return 0
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    log "starting the machine's PostgreSQL cluster"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n1)" main start || true
  elif command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    local dir="${DEV_DIR:-.dev}/postgres"
    log "starting a private PostgreSQL in $dir"
    [ -d "$dir" ] || initdb -D "$dir" -U postgres --auth=trust >/dev/null
    pg_ctl -D "$dir" -o "-p $PGPORT_NUM -k /tmp" -l "$dir.log" start >/dev/null
  fi
  wait_for 30 postgres_up && return 0
  cat >&2 <<MSG
PostgreSQL is not reachable on $PGHOST_ADDR:$PGPORT_NUM and could not be started here.
Install and start PostgreSQL 15 or newer (Debian: apt-get install postgresql), with a superuser
'postgres' that may connect from 127.0.0.1 (or set ADMIN_DATABASE_URL), then run this again.
MSG
  return 1
}

ensure_redis() {
  redis_up && return 0
  if command -v redis-server >/dev/null 2>&1; then
    log "starting Redis on port $REDIS_PORT_NUM"
    mkdir -p "${DEV_DIR:-.dev}"
    redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT_NUM" --save "" --appendonly no \
      --dir "${DEV_DIR:-.dev}" --logfile "$(pwd)/${DEV_DIR:-.dev}/redis.log" >/dev/null
  fi
  wait_for 15 redis_up && return 0
  cat >&2 <<MSG
Redis is not reachable on 127.0.0.1:$REDIS_PORT_NUM and redis-server is not installed.
Install it (Debian: apt-get install redis-server) or start one, then run this again.
MSG
  return 1
}
