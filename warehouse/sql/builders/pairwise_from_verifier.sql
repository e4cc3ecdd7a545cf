-- Pairwise judgments from verifier scores (rule ratings): every correct response (score = scale_max)
-- over every wrong one of the same prompt.
SELECT
    c.prompt_id,
    c.round_id,
    c.response_id AS response_a,
    w.response_id AS response_b,
    1.0 AS p_a,
    c.score - w.score AS margin,
    c.source,
    NULL::BOOLEAN AS consistent,
    list_sort(list_concat(c.feedback_ids, w.feedback_ids)) AS feedback_ids
FROM _rated AS c
INNER JOIN _rated AS w ON c.prompt_id = w.prompt_id
WHERE c.score >= c.scale_max AND w.score < w.scale_max
