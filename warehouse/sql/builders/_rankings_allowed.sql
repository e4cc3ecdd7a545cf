-- Fragment (included by the *_from_rankings builders): the rankings a build may use, from sources in $sources and
-- rounds in $rounds (all rounds when empty), each with its source tier for $prefer_human
-- (human 0 > rule 1 > ai 2 > reward_model 3).
SELECT
    r.*,
    CASE r.source WHEN 'human' THEN 0 WHEN 'rule' THEN 1 WHEN 'ai' THEN 2 ELSE 3 END AS tier
FROM rankings AS r
WHERE
    list_contains($sources, r.source)
    AND (len($rounds) = 0 OR list_contains($rounds, r.round_id))
