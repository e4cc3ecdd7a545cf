-- One score per rated response: the mean over judges of the highest-priority source tier
-- (human > rule > ai > reward_model when $prefer_human, else over all allowed sources).
-- $scale: 'any', 'thumbs' (scale 0..1 only) or 'graded' (everything but thumbs).
WITH allowed AS (
    SELECT
        r.*,
        -- include: _source_tier
    FROM ratings AS r
    WHERE
        r.score IS NOT NULL
        AND r.aspect = $aspect
        AND list_contains($sources, r.source)
        AND (len($rounds) = 0 OR list_contains($rounds, r.round_id))
        AND (len($judges) = 0 OR list_contains($judges, r.judge))
        AND (
            $scale = 'any'
            OR ($scale = 'thumbs' AND r.scale_min = 0 AND r.scale_max = 1)
            OR ($scale = 'graded' AND NOT (r.scale_min = 0 AND r.scale_max = 1))
        )
),

best_tier AS (
    SELECT *
    FROM allowed
    QUALIFY NOT $prefer_human OR tier = min(tier) OVER (PARTITION BY response_id)
)

SELECT
    prompt_id,
    response_id,
    min(round_id) AS round_id,
    avg(score) AS score,
    min(scale_min) AS scale_min,
    max(scale_max) AS scale_max,
    arg_min(source, tier) AS source,
    list_sort(list(id)) AS feedback_ids
FROM best_tier
GROUP BY prompt_id, response_id
