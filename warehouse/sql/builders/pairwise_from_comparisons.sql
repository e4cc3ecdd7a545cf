-- Pairwise judgments from comparisons: one row per usable verdict; p_a = P(response_a better).
-- Hard labels come from the winner; with $soft_labels the debiased prob_a is used where present.
-- feedback_id: the judgment's own id (a plain string is cheaper to group than one-element lists);
-- feedback_ids: extra ids where a judgment comes from several rows (rated pairs), else NULL.
SELECT
    c.prompt_id,
    c.round_id,
    c.response_a,
    c.response_b,
    CASE
        WHEN c.winner = 'tie' THEN 0.5
        WHEN $soft_labels AND c.prob_a IS NOT NULL THEN c.prob_a
        WHEN c.winner = 'a' THEN 1.0
        ELSE 0.0
    END AS p_a,
    NULL::DOUBLE AS margin,
    c.source,
    c.consistent,
    c.id AS feedback_id,
    NULL::VARCHAR[] AS feedback_ids
FROM comparisons AS c
WHERE
    c.winner IN ('a', 'b', 'tie')
    AND c.aspect = $aspect
    AND list_contains($sources, c.source)
    AND (len($rounds) = 0 OR list_contains($rounds, c.round_id))
    AND (len($judges) = 0 OR list_contains($judges, c.judge))
