-- Comparisons per AI judge with both responses' lengths and the human verdict on the same pair and aspect, if any.
-- $round_id: NULL for all rounds. Human rows may show the pair in either order; winners are mapped to this order.
WITH human AS (
    SELECT
        response_a,
        response_b,
        aspect,
        winner,
        row_number() OVER (PARTITION BY response_a, response_b, aspect ORDER BY created_at DESC, id) AS n
    FROM comparisons
    WHERE source = 'human' AND winner <> 'invalid'
)

SELECT
    c.judge,
    c.aspect,
    c.winner,
    c.prob_a,
    c.consistent,
    json_extract_string(c.meta, '$.template') AS template,
    json_extract_string(c.meta, '$.pos_ab') AS pos_ab,
    json_extract_string(c.meta, '$.pos_ba') AS pos_ba,
    CAST(json_extract(c.meta, '$.calls') AS DOUBLE) AS calls,
    CAST(json_extract(c.meta, '$.prompt_tokens') AS DOUBLE) AS prompt_tokens,
    CAST(json_extract(c.meta, '$.completion_tokens') AS DOUBLE) AS completion_tokens,
    CAST(json_extract(c.meta, '$.seconds') AS DOUBLE) AS seconds,
    length(ra.text) AS len_a,
    length(rb.text) AS len_b,
    coalesce(
        h1.winner,
        CASE h2.winner WHEN 'a' THEN 'b' WHEN 'b' THEN 'a' ELSE h2.winner END
    ) AS human_winner
FROM comparisons AS c
LEFT JOIN responses AS ra ON c.response_a = ra.id
LEFT JOIN responses AS rb ON c.response_b = rb.id
LEFT JOIN human AS h1 ON c.response_a = h1.response_a AND c.response_b = h1.response_b AND c.aspect = h1.aspect
    AND h1.n = 1
LEFT JOIN human AS h2 ON c.response_a = h2.response_b AND c.response_b = h2.response_a AND c.aspect = h2.aspect
    AND h2.n = 1
WHERE c.source = 'ai' AND ($round_id IS NULL OR c.round_id = $round_id)
ORDER BY c.judge, c.aspect, c.id
