-- Listwise rows from rankings with at least $k responses: the top $k, best first, with their scores and texts
-- (a NULL text where the response is missing; render leaves such rows out).
-- With $prefer_human only the highest source tier's rankings of a prompt are kept.
WITH allowed AS (
    -- include: _rankings_allowed
),

lists AS (
    SELECT
        id,
        prompt_id,
        round_id,
        response_ids[1:$k] AS completion_ids,
        coalesce(scores[1:$k], list_transform(range($k), lambda x: NULL::DOUBLE)) AS scores,
        source
    FROM allowed
    WHERE len(response_ids) >= $k
    QUALIFY NOT $prefer_human OR tier = min(tier) OVER (PARTITION BY prompt_id)
),

items AS (
    SELECT
        id,
        unnest(completion_ids) AS completion_id,
        generate_subscripts(completion_ids, 1) AS pos
    FROM lists
),

-- The texts back in best-first order: a per-ranking sort of (position, text) structs, not an ordered aggregate.
texts AS (
    SELECT
        i.id,
        list_transform(list_sort(list({pos: i.pos, text: r.text})), lambda t: t.text) AS completions
    FROM items AS i
    LEFT JOIN responses AS r ON i.completion_id = r.id
    GROUP BY i.id
)

SELECT
    l.prompt_id,
    l.round_id,
    l.completion_ids,
    l.scores,
    t.completions,
    l.source,
    [l.id] AS feedback_ids
FROM lists AS l
INNER JOIN texts AS t ON l.id = t.id
