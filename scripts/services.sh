#!/usr/bin/env bash
# Make sure PostgreSQL and Redis answer on loopback for the test suite; start them if they
# are installed but stopped. Exits non-zero with a clear message if one cannot be had.
set -u
PGHOST=${PGHOST:-127.0.0.1}
PGPORT=${PGPORT:-5432}
REDIS_PORT=${REDIS_PORT:-6379}

pg_up() { pg_isready -q -h "$PGHOST" -p "$PGPORT" 2>/dev/null; }
redis_up() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; }

if ! pg_up; then
  if command -v pg_ctlcluster >/dev/null && ls /etc/postgresql >/dev/null 2>&1; then
    echo "services: starting PostgreSQL"
    for v in $(ls /etc/postgresql); do
      pg_ctlcluster --skip-systemctl-redirect "$v" main start 2>/dev/null || true
    done
    for _ in $(seq 1 30); do pg_up && break; sleep 0.5; done
  fi
fi
if ! pg_up; then
  echo "services: PostgreSQL is not answering on $PGHOST:$PGPORT and could not be started." >&2
  echo "          Install it (apt-get install postgresql) or set DATABASE_URL to a reachable server." >&2
  exit 1
fi

if ! redis_up; then
  if command -v redis-server >/dev/null; then
    echo "services: starting Redis"
    mkdir -p /tmp/meshplane-redis
    redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" \
      --appendonly no --dir /tmp/meshplane-redis --logfile /tmp/meshplane-redis/redis.log
    for _ in $(seq 1 30); do redis_up && break; sleep 0.2; done
  fi
fi
if ! redis_up; then
  echo "services: Redis is not answering on 127.0.0.1:$REDIS_PORT and could not be started." >&2
  echo "          Install it (apt-get install redis-server) or set REDIS_URL to a reachable server." >&2
  exit 1
fi
echo "services: PostgreSQL and Redis are up"
