-- pgbench script: W1's rows written the way the ledger's writer writes them
-- (ledger-actors/src/pg/mod.rs, INSERT_SQL): one statement per batch, the 11 columns as
-- arrays unnested server-side, the payload cast from text to JSONB by the server, the
-- replication guard in the WHERE, ON CONFLICT (rid) DO NOTHING, rows sorted by anchor then
-- chain position. The arrays are built here in a CTE (the writer binds them as binary
-- parameters), so array decoding on the server is not measured; everything after it is.
-- 500 rows per statement: 25 new anchors x a 20-record chain, payload {"data": 64 x "x",
-- "seq": i}, as bench/ceiling.sql.
WITH g AS (
    SELECT gen_random_uuid() AS g_r, an.anchor AS g_a, i AS g_i, clock_timestamp() AS g_t,
           CASE WHEN i = 0 THEN NULL
                ELSE encode(sha256(convert_to(an.anchor::text || (i - 1), 'UTF8')), 'hex') END AS g_ph,
           encode(sha256(convert_to(an.anchor::text || i, 'UTF8')), 'hex') AS g_h,
           json_build_object('data', repeat('x', 64), 'seq', i)::text AS g_p
    FROM (SELECT gen_random_uuid() AS anchor FROM generate_series(1, 25)) AS an,
         generate_series(0, 19) AS i),
arr AS (
    SELECT array_agg(g_r ORDER BY g_a, g_i) AS x_r, array_agg(g_a ORDER BY g_a, g_i) AS x_a,
           array_fill('loadtest'::text, ARRAY[count(*)::int]) AS x_s,
           array_fill('event'::text, ARRAY[count(*)::int]) AS x_k,
           array_agg(g_t ORDER BY g_a, g_i) AS x_t, array_agg(g_ph ORDER BY g_a, g_i) AS x_ph,
           array_agg(g_h ORDER BY g_a, g_i) AS x_h, array_agg(g_p ORDER BY g_a, g_i) AS x_p,
           array_fill(NULL::bytea, ARRAY[count(*)::int]) AS x_sg,
           array_fill('ledger-loadtest'::text, ARRAY[count(*)::int]) AS x_pr,
           array_fill('v1'::text, ARRAY[count(*)::int]) AS x_v
    FROM g)
INSERT INTO ledger_records
    (rid, anchor_id, slot, kind, ts, prev_hash, hash, payload, sig, producer, version)
SELECT r, a, s, k, t, ph, h, p::jsonb, sg, pr, v
FROM arr, UNNEST(x_r, x_a, x_s, x_k, x_t, x_ph, x_h, x_p, x_sg, x_pr, x_v)
    AS u(r, a, s, k, t, ph, h, p, sg, pr, v)
WHERE current_setting(CASE WHEN current_setting('avl.replication', true) = 'synchronous'
    AND current_setting('synchronous_standby_names') = ''
    THEN 'avl.no_synchronous_standby' ELSE 'server_version' END) IS NOT NULL
ON CONFLICT (rid) DO NOTHING;
