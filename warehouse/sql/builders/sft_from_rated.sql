-- SFT rows from rated responses (ratings or verifier scores): per prompt the $per_prompt best responses
-- with score >= $min_score (best-of-N; rejection sampling with a minimum score).
SELECT
    prompt_id,
    round_id,
    response_id AS completion_id,
    score,
    source,
    feedback_ids
FROM _rated
WHERE score >= $min_score
QUALIFY row_number() OVER (PARTITION BY prompt_id ORDER BY score DESC, response_id ASC) <= $per_prompt
