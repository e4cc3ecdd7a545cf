-- Fragment (included by judge_pairs.sql and annotation_pair_candidates.sql): every pair of responses to the same
-- prompt in round $round_id whose origin is in $origins. Responses are numbered k = 1, 2, ... per prompt by sample
-- index, then id; one row per pair, ka < kb, with the question and both texts.
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
)

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
