-- name: tool_by_error_type
-- description: RoT rows per tool and ErrorType (the failed action's tool), verified ones counted apart.
-- param: verified_only bool = false  -- count only rows that passed every gate
SELECT r.tool,
       r.error_type,
       count(*) AS rot_rows,
       sum(CAST(r.verified AS BIGINT)) AS verified
FROM rot r
WHERE r.verified OR NOT $verified_only
GROUP BY r.tool, r.error_type
ORDER BY r.tool, rot_rows DESC, r.error_type
