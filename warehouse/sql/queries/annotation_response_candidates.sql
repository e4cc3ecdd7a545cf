-- Single responses of a round (binary, step and correction tasks), with AI binary verdicts on each.
-- $round_id: the round; $origins: response origins to include; $need_steps: only responses with steps, each with
-- the step labels of every AI and reward-model step judge (step_verdicts: judge, step indices, labels) and whether a
-- final_answer verifier found its answer wrong (wrong_answer; NULL where none checked it).
WITH step_judges AS (
    SELECT
        response_id,
        judge,
        list(step_index ORDER BY step_index) AS steps,
        list(label ORDER BY step_index) AS labels
    FROM step_labels
    WHERE $need_steps AND source IN ('ai', 'reward_model')
    GROUP BY response_id, judge
),

step_verdicts AS (
    SELECT
        response_id,
        list({'judge': judge, 'steps': steps, 'labels': labels} ORDER BY judge) AS step_verdicts
    FROM step_judges
    GROUP BY response_id
),

outcomes AS (
    SELECT
        response_id,
        bool_or(score < 1) AS wrong_answer
    FROM ratings
    WHERE $need_steps AND source = 'rule' AND aspect = 'final_answer' AND score IS NOT NULL
    GROUP BY response_id
)

SELECT
    r.id,
    r.prompt_id,
    p.text AS question,
    r.text,
    r.steps,
    list({'judge': t.judge, 'score': t.score} ORDER BY t.judge) FILTER (WHERE t.judge IS NOT NULL) AS verdicts,
    any_value(sv.step_verdicts) AS step_verdicts,
    any_value(o.wrong_answer) AS wrong_answer
FROM responses AS r
INNER JOIN prompts AS p ON r.prompt_id = p.id
LEFT JOIN ratings AS t
    ON t.response_id = r.id AND t.source = 'ai' AND t.scale_min = 0 AND t.scale_max = 1 AND t.score IS NOT NULL
LEFT JOIN step_verdicts AS sv ON r.id = sv.response_id
LEFT JOIN outcomes AS o ON r.id = o.response_id
WHERE
    r.round_id = $round_id
    AND list_contains($origins, r.origin)
    AND (NOT $need_steps OR coalesce(len(r.steps), 0) > 0)
GROUP BY r.id, r.prompt_id, p.text, r.text, r.steps, r.sample_index
ORDER BY r.prompt_id, r.sample_index, r.id
