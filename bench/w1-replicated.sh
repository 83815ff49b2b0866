#!/usr/bin/env bash
# W1 on PostgreSQL with replicated durability against without, in the same run, on a
# primary with one streaming standby made for the purpose (Debian's pg_createcluster +
# pg_basebackup -R; both dropped at the end; the `main` cluster is not touched).
#
#   bench/w1-replicated.sh LEDGER_BINARY [RUNS]
#
# The primary names the standby in synchronous_standby_names but its own
# synchronous_commit is `local`: `replication: local` ledgers commit without waiting for
# the standby (asynchronous replication, PostgreSQL's usual setup), `replication:
# synchronous` ledgers wait for its flush. For each run, alternating: a fresh database and
# `ledger loadtest --anchors 10000 --appends-per-anchor 20 --concurrency 512 --json` with
# LEDGER_REPLICATION=local, then the same with synchronous. One line per load test.
set -euo pipefail
bin=${1:?usage: $0 LEDGER_BINARY [RUNS]}
runs=${2:-3}
ver=$(ls /etc/postgresql | sort -V | tail -n 1)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
p=avl_benchp_$$ s=avl_benchs_$$ pport=$(free_port) sport=$(free_port)
cleanup() {
    pg_dropcluster --stop "$ver" "$s" 2>/dev/null || true
    pg_dropcluster --stop "$ver" "$p" 2>/dev/null || true
}
trap cleanup EXIT
pg_createcluster "$ver" "$p" --port "$pport" -- --auth=trust >/dev/null
cat >> "/etc/postgresql/$ver/$p/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
wal_level = replica
max_wal_senders = 8
synchronous_standby_names = '*'
synchronous_commit = local
CONF
echo "host replication all 127.0.0.1/32 trust" >> "/etc/postgresql/$ver/$p/pg_hba.conf"
pg_ctlcluster --skip-systemctl-redirect "$ver" "$p" start
pg_createcluster "$ver" "$s" --port "$sport" -- --auth=trust >/dev/null
data=/var/lib/postgresql/$ver/$s
rm -rf "$data" && mkdir "$data" && chown postgres:postgres "$data" && chmod 700 "$data"
runuser -u postgres -- pg_basebackup -h 127.0.0.1 -p "$pport" -U postgres -D "$data" -R -X stream --checkpoint=fast
echo "listen_addresses = '127.0.0.1'" >> "/etc/postgresql/$ver/$s/postgresql.conf"
pg_ctlcluster --skip-systemctl-redirect "$ver" "$s" start
until [ "$(psql -qXtA -h 127.0.0.1 -p "$pport" -U postgres -d postgres -c "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'")" = 1 ]; do sleep 0.2; done
for run in $(seq 1 "$runs"); do
    for mode in local synchronous; do
        psql -qX -h 127.0.0.1 -p "$pport" -U postgres -d postgres -c "DROP DATABASE IF EXISTS w1" -c "CREATE DATABASE w1" >/dev/null
        dsn="postgres://postgres@127.0.0.1:$pport/w1"
        LEDGER_DSN=$dsn "$bin" migrate up >/dev/null
        out=$(LEDGER_BACKEND=postgres LEDGER_DSN=$dsn LEDGER_REPLICATION=$mode \
            "$bin" loadtest --anchors 10000 --appends-per-anchor 20 --concurrency 512 --json)
        echo "run $run replication=$mode loadtest=$out load=\"$(cut -d' ' -f1-3 /proc/loadavg)\""
    done
done
