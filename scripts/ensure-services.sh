#!/usr/bin/env bash
# Starts PostgreSQL, Redis and RabbitMQ when they are installed here but not answering, and we are root.
# The tests use the real services; without them those tests skip (outside CI) or fail (CI=true).
set -uo pipefail
up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
[ "$(id -u)" -eq 0 ] || exit 0
if ! up 5432 && [ -d /etc/postgresql ] && command -v pg_ctlcluster >/dev/null; then
  echo "Starting PostgreSQL"; pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
fi
if ! up 6379 && command -v redis-server >/dev/null; then
  echo "Starting Redis"; redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no || true
fi
if ! up 5672 && command -v rabbitmq-server >/dev/null; then
  echo "Starting RabbitMQ"; rabbitmq-server -detached || true
  for _ in $(seq 1 30); do up 5672 && break; sleep 1; done
fi
exit 0
