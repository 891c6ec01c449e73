-- name: unverified_and_rejected
-- description: What did not make it: RoT rows that failed a gate, near-misses the judge did not accept, and input records the ingest rejected, each with its reason.
-- param: n int = 50  -- rows per origin
SELECT origin, id, kind, reason
FROM (
  SELECT origin, id, kind, reason, row_number() OVER (PARTITION BY origin ORDER BY kind, id) AS k
  FROM (
    SELECT 'rot' AS origin, rot_id AS id, error_type AS kind, array_to_string(gates, '; ') AS reason
    FROM rot WHERE NOT verified
    UNION ALL
    SELECT 'near_misses', near_miss_id, error_type, concat(verdict, ': ', coalesce(reason, ''))
    FROM near_misses WHERE NOT is_failure
    UNION ALL
    SELECT 'rejects', reject_id, format, concat(file, CASE WHEN line IS NULL THEN '' ELSE concat(':', CAST(line AS VARCHAR)) END, ': ', reason)
    FROM rejects
  ) u
) ranked
WHERE k <= $n
ORDER BY origin, kind, id
