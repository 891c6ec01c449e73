-- name: operator_failure_rate
-- description: Per perturbation operator: near-misses executed, the share that really failed, and the share of their RoT rows that were verified.
-- param: source string = 'engine'  -- near-miss source: engine (data engine) or policy (ReGRPO rollouts)
SELECT n.operator,
       n.error_type,
       count(*) AS near_misses,
       round(avg(CAST(n.is_failure AS DOUBLE)), 3) AS failure_rate,
       count(r.rot_id) AS rot_rows,
       round(avg(CAST(r.verified AS DOUBLE)), 3) AS verified_rate
FROM near_misses n
LEFT JOIN rot r ON r.near_miss_id = n.near_miss_id
WHERE n.source = $source
GROUP BY n.operator, n.error_type
ORDER BY n.operator, n.error_type
