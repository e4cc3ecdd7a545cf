-- Single responses of a round (binary, step and correction tasks), with AI binary verdicts on each.
-- $round_id: the round; $origins: response origins to include; $need_steps: only responses with steps.
SELECT
    r.id,
    r.prompt_id,
    p.text AS question,
    r.text,
    r.steps,
    list({'judge': t.judge, 'score': t.score} ORDER BY t.judge) FILTER (WHERE t.judge IS NOT NULL) AS verdicts
FROM responses AS r
INNER JOIN prompts AS p ON r.prompt_id = p.id
LEFT JOIN ratings AS t
    ON t.response_id = r.id AND t.source = 'ai' AND t.scale_min = 0 AND t.scale_max = 1 AND t.score IS NOT NULL
WHERE
    r.round_id = $round_id
    AND list_contains($origins, r.origin)
    AND (NOT $need_steps OR coalesce(len(r.steps), 0) > 0)
GROUP BY r.id, r.prompt_id, p.text, r.text, r.steps, r.sample_index
ORDER BY r.prompt_id, r.sample_index, r.id
