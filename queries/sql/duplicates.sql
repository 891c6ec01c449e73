-- name: duplicates
-- description: RoT rows that share the same failed action and the same failed observation (a duplicate teaches nothing new).
-- param: min_count int = 2  -- smallest group to show
SELECT failed_action.tool AS tool,
       failed_action.arguments AS arguments,
       failed_observation,
       count(*) AS copies,
       array_sort(array_agg(DISTINCT error_type)) AS error_types,
       min(rot_id) AS first_rot_id
FROM rot
GROUP BY failed_action.tool, failed_action.arguments, failed_observation
HAVING count(*) >= $min_count
ORDER BY copies DESC, tool, arguments, failed_observation
