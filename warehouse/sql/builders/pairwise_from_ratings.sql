-- Pairwise judgments from ratings: per prompt, the best rated response over the worst (best of N).
-- Ties on score break by response id (smallest id is best, largest is worst) so the choice is deterministic.
WITH ends AS (
    SELECT
        prompt_id,
        first(response_id ORDER BY score DESC, response_id ASC) AS best_id,
        first(response_id ORDER BY score ASC, response_id DESC) AS worst_id,
        max(score) - min(score) AS gap,
        count(*) AS n
    FROM _rated
    GROUP BY prompt_id
)

SELECT
    e.prompt_id,
    b.round_id,
    e.best_id AS response_a,
    e.worst_id AS response_b,
    1.0 AS p_a,
    e.gap AS margin,
    b.source,
    NULL::BOOLEAN AS consistent,
    list_sort(list_concat(b.feedback_ids, w.feedback_ids)) AS feedback_ids
FROM ends AS e
INNER JOIN _rated AS b ON e.best_id = b.response_id
INNER JOIN _rated AS w ON e.worst_id = w.response_id
WHERE e.n >= 2 AND e.best_id <> e.worst_id
