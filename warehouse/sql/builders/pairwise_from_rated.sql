-- Pairwise judgments from rated responses (ratings, or verifier scores = rule ratings).
-- A response beats another of the same prompt when its score is higher; with $correct_only (verifier) only a
-- correct response (score = scale_max) beats a wrong one (score < scale_max).
-- $pairing 'all' (and 'rso', whose rejection sampling chose the rated responses): every such pair.
-- 'best_vs_worst': per prompt only the best response over the worst, ties on score broken by response id
-- (smallest id is best, largest is worst) so the choice is deterministic.
WITH ranked AS (
    SELECT
        *,
        row_number() OVER (PARTITION BY prompt_id ORDER BY score DESC, response_id ASC) = 1 AS is_best,
        row_number() OVER (PARTITION BY prompt_id ORDER BY score ASC, response_id DESC) = 1 AS is_worst
    FROM _rated
),

candidates AS (
    SELECT *
    FROM ranked
    WHERE $pairing IN ('all', 'rso') OR is_best OR is_worst
)

SELECT
    c.prompt_id,
    c.round_id,
    c.response_id AS response_a,
    w.response_id AS response_b,
    1.0 AS p_a,
    c.score - w.score AS margin,
    c.source,
    NULL::BOOLEAN AS consistent,
    NULL::VARCHAR AS feedback_id,
    list_sort(list_concat(c.feedback_ids, w.feedback_ids)) AS feedback_ids
FROM candidates AS c
INNER JOIN candidates AS w ON c.prompt_id = w.prompt_id
WHERE
    c.score > w.score
    AND (NOT $correct_only OR (c.score >= c.scale_max AND w.score < w.scale_max))
    AND ($pairing IN ('all', 'rso') OR (c.is_best AND w.is_worst))
