-- name: failures_by_error_type
-- description: RoT rows per ErrorType with its family, how many passed every gate, and the executed near-misses behind them.
SELECT r.error_type,
       error_family(r.error_type) AS family,
       count(*) AS rot_rows,
       sum(CAST(r.verified AS BIGINT)) AS verified,
       round(avg(CAST(r.verified AS DOUBLE)), 3) AS verified_rate,
       count(DISTINCT r.trajectory_id) AS trajectories
FROM rot r
GROUP BY r.error_type
ORDER BY rot_rows DESC, r.error_type
