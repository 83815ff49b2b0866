-- pgbench script (one client, run beside an inserting one): the transparency log's
-- integrator as ledger-actors/src/integrator/postgres.rs runs it, one round per transaction:
-- the pending read (the new rows' rid, hash, prev_hash, ts in (tx_id, seq) order after the
-- watermark, below the horizon, through `ledger_records_integration`, at most 20,000), one
-- `ledger_log` row per record (leaf index, rid), the lease row's tree size and watermark,
-- pg_notify; then a 5 ms pause (the integrator's least gap between rounds woken by appends).
-- Not done here: the client's hashing and the tile upserts (0.04 s of executor time per W1
-- run, measured with pg_stat_statements), the lease check's separate round trips.
BEGIN;
SELECT tree_size AS size, wm_tx::text AS wtx, wm_seq AS wseq
    FROM ledger_integrator WHERE id = 1 FOR UPDATE \gset
WITH p AS (
    SELECT r.rid, r.hash, r.prev_hash, r.ts, r.tx_id, r.seq
    FROM ledger_records r
    WHERE (r.tx_id, r.seq) > (:wtx::text::xid8, :wseq)
      AND r.tx_id < (SELECT COALESCE(min(x), pg_snapshot_xmax(pg_current_snapshot()))
          FROM pg_snapshot_xip(pg_current_snapshot()) AS x
          WHERE NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.backend_xid = x::xid
            AND a.datname IS DISTINCT FROM current_database()))
    ORDER BY r.tx_id, r.seq LIMIT 20000),
n AS (SELECT rid, tx_id, seq, row_number() OVER (ORDER BY tx_id, seq) - 1 AS k FROM p),
l AS (INSERT INTO ledger_log (leaf_index, rid) SELECT :size + n.k, n.rid FROM n RETURNING 1),
last AS (SELECT tx_id, seq FROM n ORDER BY k DESC LIMIT 1)
UPDATE ledger_integrator SET tree_size = tree_size + (SELECT count(*) FROM l),
    wm_tx = COALESCE((SELECT tx_id FROM last), wm_tx),
    wm_seq = COALESCE((SELECT seq FROM last), wm_seq)
WHERE id = 1;
SELECT pg_notify('avl_ledger_log', '1');
COMMIT;
\sleep 5 ms
