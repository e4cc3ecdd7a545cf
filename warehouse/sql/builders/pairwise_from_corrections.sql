-- Pairwise judgments from corrections: the corrected answer over the original.
SELECT
    c.prompt_id,
    c.round_id,
    c.corrected_id AS response_a,
    c.original_id AS response_b,
    1.0 AS p_a,
    NULL::DOUBLE AS margin,
    c.source,
    NULL::BOOLEAN AS consistent,
    c.id AS feedback_id,
    NULL::VARCHAR[] AS feedback_ids
FROM corrections AS c
WHERE
    c.aspect = $aspect
    AND list_contains($sources, c.source)
    AND (len($rounds) = 0 OR list_contains($rounds, c.round_id))
    AND (len($judges) = 0 OR list_contains($judges, c.judge))
    AND c.corrected_id <> c.original_id
