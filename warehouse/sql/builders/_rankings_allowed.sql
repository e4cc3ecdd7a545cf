-- Fragment (included by the *_from_rankings builders): the rankings a build may use, of aspect $aspect, from sources
-- in $sources and rounds in $rounds and judges in $judges (all when empty), each with its source tier for
-- $prefer_human.
SELECT
    r.*,
    -- include: _source_tier
FROM rankings AS r
WHERE
    r.aspect = $aspect
    AND list_contains($sources, r.source)
    AND (len($rounds) = 0 OR list_contains($rounds, r.round_id))
    AND (len($judges) = 0 OR list_contains($judges, r.judge))
