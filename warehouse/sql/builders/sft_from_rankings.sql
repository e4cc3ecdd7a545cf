-- SFT rows from rankings: the top $per_prompt responses of each ranking (scores where the ranking has them).
WITH allowed AS (
    SELECT
        r.*,
        CASE r.source WHEN 'human' THEN 0 WHEN 'rule' THEN 1 WHEN 'ai' THEN 2 ELSE 3 END AS tier
    FROM rankings AS r
    WHERE
        list_contains($sources, r.source)
        AND (len($rounds) = 0 OR list_contains($rounds, r.round_id))
    QUALIFY NOT $prefer_human OR tier = min(tier) OVER (PARTITION BY r.prompt_id)
),

top AS (
    SELECT
        allowed.*,
        unnest(range(1, least(len(allowed.response_ids), $per_prompt) + 1)) AS pos
    FROM allowed
)

SELECT
    prompt_id,
    round_id,
    response_ids[pos] AS completion_id,
    scores[pos] AS score,
    source,
    [id] AS feedback_ids
FROM top
WHERE scores[pos] IS NULL OR scores[pos] >= $min_score
