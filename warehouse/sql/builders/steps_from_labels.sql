-- Step-labelled solutions: step_labels grouped per (response, judge) and aligned with responses.steps.
-- labels[k] is the label of step k (-1 / 0 / +1, NULL where unlabelled). Steps after the last labelled one
-- are cut; with $truncate_after_negative, steps after the first -1 are cut too (PRM800K phase 2).
-- A response with a parent (responses.parent_id; PRM800K alternative completions continue the solution's first
-- steps) takes the same judge's parent labels for the steps it has not labelled itself, where its steps up to and
-- including that step equal the parent's (a step's label depends on the steps before it).
-- With $rollout_threshold, a label from rollouts (meta.estimate: the share of a step's rollouts that reached the
-- right answer) is +1 where that share is at least the threshold, else -1.
WITH allowed AS (
    SELECT
        s.* REPLACE (
            CASE
                WHEN $rollout_threshold IS NULL OR json_extract(s.meta, '$.estimate') IS NULL THEN s.label
                WHEN json_extract(s.meta, '$.estimate')::DOUBLE >= $rollout_threshold THEN 1
                ELSE -1
            END::SMALLINT AS label
        ),
        -- include: _source_tier
    FROM step_labels AS s
    WHERE
        list_contains($sources, s.source)
        AND (len($rounds) = 0 OR list_contains($rounds, s.round_id))
        AND (len($judges) = 0 OR list_contains($judges, s.judge))
        AND s.label IS NOT NULL
    QUALIFY NOT $prefer_human OR tier = min(tier) OVER (PARTITION BY s.response_id)
),

labelled AS (
    SELECT DISTINCT
        a.response_id,
        a.judge,
        c.parent_id,
        c.steps
    FROM allowed AS a
    INNER JOIN responses AS c ON a.response_id = c.id
),

inherited AS (
    SELECT
        l.response_id,
        l.judge,
        pl.prompt_id,
        NULL::VARCHAR AS round_id,
        pl.source,
        pl.step_index,
        pl.label,
        pl.id
    FROM labelled AS l
    INNER JOIN responses AS p ON l.parent_id = p.id
    INNER JOIN allowed AS pl ON p.id = pl.response_id AND l.judge = pl.judge
    LEFT JOIN allowed AS own
        ON l.response_id = own.response_id AND l.judge = own.judge AND pl.step_index = own.step_index
    WHERE
        own.id IS NULL
        AND pl.step_index < len(l.steps)
        AND l.steps[1:pl.step_index + 1] = p.steps[1:pl.step_index + 1]
),

grouped AS (
    SELECT
        response_id,
        judge,
        any_value(prompt_id) AS prompt_id,
        min(round_id) AS round_id,
        any_value(source) AS source,
        list(step_index ORDER BY step_index) AS idx,
        list(label ORDER BY step_index) AS lab,
        list_sort(list(id)) AS feedback_ids
    FROM (
        SELECT response_id, judge, prompt_id, round_id, source, step_index, label, id FROM allowed
        UNION ALL
        SELECT response_id, judge, prompt_id, round_id, source, step_index, label, id FROM inherited
    )
    GROUP BY response_id, judge
),

aligned AS (
    SELECT
        g.*,
        r.steps AS all_steps,
        list_transform(range(len(r.steps)), lambda k: g.lab[list_position(g.idx, k)]) AS all_labels
    FROM grouped AS g
    INNER JOIN responses AS r ON g.response_id = r.id
    WHERE r.steps IS NOT NULL AND len(r.steps) > 0
),

cut AS (
    SELECT
        *,
        least(
            len(all_labels) - coalesce(list_position(list_reverse(list_transform(all_labels, lambda x: x IS NOT NULL)), true), len(all_labels) + 1) + 1,
            CASE WHEN $truncate_after_negative THEN coalesce(list_position(all_labels, -1), len(all_labels)) ELSE len(all_labels) END
        ) AS n_keep
    FROM aligned
)

SELECT
    prompt_id,
    round_id,
    response_id AS completion_id,
    all_steps[1:n_keep] AS steps,
    all_labels[1:n_keep]::TINYINT[] AS labels,
    source,
    feedback_ids
FROM cut
WHERE n_keep > 0
