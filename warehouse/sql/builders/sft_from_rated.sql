-- SFT rows from rated responses (ratings or verifier scores): per prompt the $per_prompt best responses
-- with score >= $min_score (best-of-N; rejection sampling with a minimum score). With $correct_only
-- (verifier scores) only responses at the top of the scale count.
SELECT
    prompt_id,
    round_id,
    response_id AS completion_id,
    score,
    source,
    feedback_ids
FROM _rated
WHERE score >= $min_score AND (NOT $correct_only OR score >= scale_max)
QUALIFY row_number() OVER (PARTITION BY prompt_id ORDER BY score DESC, response_id ASC) <= $per_prompt
