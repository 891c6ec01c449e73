-- name: evidence_examples
-- description: A seeded random sample of one ErrorType's RoT rows: the failed call, what the tool said, the quoted evidence and the fix.
-- param: error_type string = 'ArgInvalid'  -- which ErrorType
-- param: n int = 5  -- how many examples
-- param: seed int = 0  -- another seed, another sample (the same seed, the same sample)
SELECT rot_id, tool, failed_action.raw AS failed_action, failed_observation, evidence, fix_plan, corrected_action.raw AS corrected_action
FROM (
  SELECT r.*, row_number() OVER (ORDER BY md5(concat(r.rot_id, CAST($seed AS VARCHAR))), r.rot_id) AS pick
  FROM rot r
  WHERE r.error_type = $error_type
) s
WHERE pick <= $n
ORDER BY pick
