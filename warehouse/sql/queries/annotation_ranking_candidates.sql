-- The responses of each prompt in a round (two or more), in sample order, with AI rankings of exactly that set
-- (overall ones: what a ranking task asks people).
-- $round_id: the round; $origins: response origins to include.
WITH grouped AS (
    SELECT
        r.prompt_id,
        any_value(p.text) AS question,
        list(r.id ORDER BY r.sample_index, r.id) AS ids,
        list(r.text ORDER BY r.sample_index, r.id) AS texts
    FROM responses AS r
    INNER JOIN prompts AS p ON r.prompt_id = p.id
    WHERE r.round_id = $round_id AND list_contains($origins, r.origin)
    GROUP BY r.prompt_id
    HAVING count(*) >= 2
)

SELECT
    g.prompt_id,
    g.question,
    g.ids,
    g.texts,
    list({'judge': k.judge, 'order': k.response_ids} ORDER BY k.judge) FILTER (WHERE k.judge IS NOT NULL) AS verdicts
FROM grouped AS g
LEFT JOIN rankings AS k
    ON k.source = 'ai' AND k.aspect = 'overall' AND list_sort(k.response_ids) = list_sort(g.ids)
GROUP BY g.prompt_id, g.question, g.ids, g.texts
ORDER BY g.prompt_id
