-- name: snapshot_diff
-- description: Rows added and removed from snapshot `base` to snapshot `head`, per table, and per ErrorType for the typed tables.
-- param: base snapshot  -- the older snapshot; its tables are readable as base.<table>
-- param: head snapshot  -- the newer snapshot; its tables are readable as head.<table>
SELECT tbl, error_type, added, removed FROM (
  SELECT 'trajectories' AS tbl, CAST(NULL AS VARCHAR) AS error_type,
         count(*) FILTER (WHERE b.trajectory_id IS NULL) AS added,
         count(*) FILTER (WHERE h.trajectory_id IS NULL) AS removed
  FROM head.trajectories h FULL OUTER JOIN base.trajectories b ON h.trajectory_id = b.trajectory_id
  UNION ALL
  SELECT 'near_misses', coalesce(h.error_type, b.error_type),
         count(*) FILTER (WHERE b.near_miss_id IS NULL), count(*) FILTER (WHERE h.near_miss_id IS NULL)
  FROM head.near_misses h FULL OUTER JOIN base.near_misses b ON h.near_miss_id = b.near_miss_id
  GROUP BY coalesce(h.error_type, b.error_type)
  UNION ALL
  SELECT 'rot', coalesce(h.error_type, b.error_type),
         count(*) FILTER (WHERE b.rot_id IS NULL), count(*) FILTER (WHERE h.rot_id IS NULL)
  FROM head.rot h FULL OUTER JOIN base.rot b ON h.rot_id = b.rot_id
  GROUP BY coalesce(h.error_type, b.error_type)
  UNION ALL
  SELECT 'rejects', CAST(NULL AS VARCHAR),
         count(*) FILTER (WHERE b.reject_id IS NULL), count(*) FILTER (WHERE h.reject_id IS NULL)
  FROM head.rejects h FULL OUTER JOIN base.rejects b ON h.reject_id = b.reject_id
) d
WHERE added > 0 OR removed > 0
ORDER BY tbl, error_type NULLS FIRST
