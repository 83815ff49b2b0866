-- pgbench script: the PostgreSQL ceiling for W1's rows on this machine.
-- One transaction = one multi-row INSERT of 500 rows shaped like `ledger loadtest`'s:
-- 25 new anchors x a 20-record chain each (genesis, then each record linking to the previous
-- record's hash, so the fork guard and the predecessor check are exercised as in W1),
-- payload {"seq": i, "data": 64 x "x"}, producer/slot/kind as the load test writes them.
INSERT INTO ledger_records
    (rid, anchor_id, slot, kind, ts, prev_hash, hash, payload, sig, producer, version)
SELECT gen_random_uuid(), a.anchor, 'loadtest', 'event', clock_timestamp(),
       CASE WHEN i = 0 THEN NULL
            ELSE encode(sha256(convert_to(a.anchor::text || (i - 1), 'UTF8')), 'hex') END,
       encode(sha256(convert_to(a.anchor::text || i, 'UTF8')), 'hex'),
       jsonb_build_object('seq', i, 'data', repeat('x', 64)),
       NULL, 'ledger-loadtest', 'v1'
FROM (SELECT gen_random_uuid() AS anchor FROM generate_series(1, 25)) AS a,
     generate_series(0, 19) AS i
ORDER BY a.anchor, i;
