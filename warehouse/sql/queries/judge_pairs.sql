-- Pairs of responses to the same prompt within a round, for pairwise judges.
-- $round_id: the round; $consecutive: pair sample k with k+1 only (else all pairs);
-- $cap: at most this many pairs per prompt; $origins: response origins to include.
WITH pairs AS (
    -- include: _response_pairs
),

capped AS (
    SELECT
        *,
        row_number() OVER (PARTITION BY prompt_id ORDER BY ka, kb) AS n
    FROM pairs
    WHERE NOT $consecutive OR kb = ka + 1
)

SELECT prompt_id, question, a_id, a_text, b_id, b_text
FROM capped
WHERE n <= $cap
ORDER BY prompt_id, ka, kb
