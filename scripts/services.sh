#!/usr/bin/env bash
# Make sure the PostgreSQL and Redis that the tests use answer on 127.0.0.1; start them if
# they are installed but stopped. Exits non-zero when either cannot be had: tests that need
# them must fail, not skip.
set -u
PGHOST=127.0.0.1 PGPORT=${PGPORT:-5432}
REDIS_PORT=${REDIS_PORT:-6379}

pg_ok() { pg_isready -q -h "$PGHOST" -p "$PGPORT" 2>/dev/null \
  || python3 -c "import socket,sys; socket.create_connection(('$PGHOST',$PGPORT),1)" 2>/dev/null; }
redis_ok() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; }

if ! pg_ok && command -v pg_ctlcluster >/dev/null; then
  version=$(ls /etc/postgresql 2>/dev/null | head -n1)
  [ -n "$version" ] && pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 30); do pg_ok && break; sleep 0.5; done
fi
if ! redis_ok && command -v redis-server >/dev/null; then
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no >/dev/null
  for _ in $(seq 1 20); do redis_ok && break; sleep 0.25; done
fi
status=0
pg_ok || { echo "PostgreSQL is not answering on $PGHOST:$PGPORT (tests need it)" >&2; status=1; }
redis_ok || { echo "Redis is not answering on 127.0.0.1:$REDIS_PORT (tests need it)" >&2; status=1; }
[ $status -eq 0 ] && echo "services: PostgreSQL and Redis answer"
exit $status
