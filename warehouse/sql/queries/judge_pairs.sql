-- Pairs of responses to the same prompt within a round, for pairwise judges.
-- $round_id: the round; $consecutive: pair sample k with k+1 only (else all pairs);
-- $cap: at most this many pairs per prompt; $origins: response origins to include.
WITH ranked AS (
    SELECT
        r.id,
        r.prompt_id,
        r.text,
        p.text AS question,
        row_number() OVER (PARTITION BY r.prompt_id ORDER BY r.sample_index, r.id) AS k
    FROM responses AS r
    INNER JOIN prompts AS p ON r.prompt_id = p.id
    WHERE r.round_id = $round_id AND list_contains($origins, r.origin)
),

pairs AS (
    SELECT
        a.prompt_id,
        a.question,
        a.id AS a_id,
        a.text AS a_text,
        b.id AS b_id,
        b.text AS b_text,
        a.k AS ka,
        b.k AS kb
    FROM ranked AS a
    INNER JOIN ranked AS b ON a.prompt_id = b.prompt_id AND a.k < b.k
    WHERE NOT $consecutive OR b.k = a.k + 1
),

capped AS (
    SELECT
        *,
        row_number() OVER (PARTITION BY prompt_id ORDER BY ka, kb) AS n
    FROM pairs
)

SELECT prompt_id, question, a_id, a_text, b_id, b_text
FROM capped
WHERE n <= $cap
ORDER BY prompt_id, ka, kb
