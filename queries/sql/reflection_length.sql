-- name: reflection_length
-- description: Length of the reflections (evidence and fix plan) per ErrorType, in pre-tokens (token_count) and characters.
SELECT error_type,
       count(*) AS rot_rows,
       min(tokens) AS min_tokens,
       round(avg(tokens), 1) AS avg_tokens,
       median(tokens) AS median_tokens,
       max(tokens) AS max_tokens,
       round(avg(chars), 1) AS avg_chars
FROM (
  SELECT error_type,
         token_count(evidence) + token_count(fix_plan) AS tokens,
         character_length(evidence) + character_length(fix_plan) AS chars
  FROM rot
) t
GROUP BY error_type
ORDER BY error_type
