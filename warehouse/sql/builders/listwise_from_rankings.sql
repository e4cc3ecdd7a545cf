-- Listwise rows from rankings with at least $k responses: the top $k, best first, with their scores.
-- With $prefer_human only the highest source tier's rankings of a prompt are kept.
WITH allowed AS (
    SELECT
        r.*,
        CASE r.source WHEN 'human' THEN 0 WHEN 'rule' THEN 1 WHEN 'ai' THEN 2 ELSE 3 END AS tier
    FROM rankings AS r
    WHERE
        list_contains($sources, r.source)
        AND (len($rounds) = 0 OR list_contains($rounds, r.round_id))
)

SELECT
    prompt_id,
    round_id,
    response_ids[1:$k] AS completion_ids,
    coalesce(scores[1:$k], list_transform(range($k), lambda x: NULL::DOUBLE)) AS scores,
    source,
    [id] AS feedback_ids
FROM allowed
WHERE len(response_ids) >= $k
QUALIFY NOT $prefer_human OR tier = min(tier) OVER (PARTITION BY prompt_id)
