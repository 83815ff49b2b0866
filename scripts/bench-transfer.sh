#!/bin/bash
# Export/import figures for the README: a database of N_ANCHORS x 20 records (ledger loadtest),
# then ledger export x3 and ledger import x3 (fresh database each), with /usr/bin/time -v, and
# the reference \copy out/in of the same rows. Usage: scripts/bench-transfer.sh N_ANCHORS TAG
# (10000 = 200k records). Needs a release build (cargo build --release -p ledger-cli), psql, bc.
set -u
L=${LEDGER:-target/release/ledger}
OUT=${OUT:-/tmp}
N_ANCHORS=$1   # 10000 -> 200k records, 2500 -> 50k
TAG=$2
PG="psql -qtAh ${PGHOST:-127.0.0.1} -U ${PGUSER:-postgres}"
export LEDGER_BACKEND=postgres LEDGER_TIMEOUT=30
SRC=bench_src_$TAG
$PG -c "drop database if exists $SRC" -c "create database $SRC"
export LEDGER_DSN=postgres://${PGUSER:-postgres}@${PGHOST:-127.0.0.1}/$SRC
$L migrate up >/dev/null
$L loadtest --anchors $N_ANCHORS --appends-per-anchor 20 --concurrency 512 --json > $OUT/bench-$TAG-load.json
echo "rows: $($PG -d $SRC -c 'select count(*) from ledger_records')"
for i in 1 2 3; do
  /usr/bin/time -v $L export -o $OUT/bench-$TAG.jsonl 2> $OUT/bench-$TAG-export-$i.time
  grep -E "Elapsed|Maximum resident" $OUT/bench-$TAG-export-$i.time | sed "s/^/export $i: /"
done
ls -la $OUT/bench-$TAG.jsonl
# reference: COPY out of the same rows
for i in 1 2 3; do
  s=$(date +%s.%N); $PG -d $SRC -c "\copy ledger_records to $OUT/bench-$TAG.copy" ; e=$(date +%s.%N)
  echo "copy-out $i: $(echo "$e - $s" | bc)"
done
for i in 1 2 3; do
  DST=bench_dst_$TAG
  $PG -c "drop database if exists $DST" -c "create database $DST"
  LEDGER_DSN=postgres://${PGUSER:-postgres}@${PGHOST:-127.0.0.1}/$DST $L migrate up >/dev/null
  LEDGER_DSN=postgres://${PGUSER:-postgres}@${PGHOST:-127.0.0.1}/$DST /usr/bin/time -v $L import $OUT/bench-$TAG.jsonl --json > $OUT/bench-$TAG-import-$i.json 2> $OUT/bench-$TAG-import-$i.time
  cat $OUT/bench-$TAG-import-$i.json
  grep -E "Elapsed|Maximum resident" $OUT/bench-$TAG-import-$i.time | sed "s/^/import $i: /"
done
# reference: COPY into a fresh migrated database (same indexes, no verification)
for i in 1 2 3; do
  DST=bench_dst_$TAG
  $PG -c "drop database if exists $DST" -c "create database $DST"
  LEDGER_DSN=postgres://${PGUSER:-postgres}@${PGHOST:-127.0.0.1}/$DST $L migrate up >/dev/null
  s=$(date +%s.%N); $PG -d $DST -c "\copy ledger_records from $OUT/bench-$TAG.copy"; e=$(date +%s.%N)
  echo "copy-in $i: $(echo "$e - $s" | bc)"
done
LEDGER_DSN=postgres://${PGUSER:-postgres}@${PGHOST:-127.0.0.1}/$DST $L verify | tail -1
$PG -c "drop database if exists bench_dst_$TAG" -c "drop database if exists $SRC"
