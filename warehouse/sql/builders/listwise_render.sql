-- Join prompt and completion texts onto listwise rows, keeping the best-first order (a per-row sort of
-- (position, text) structs rather than an ordered aggregate).
WITH numbered AS (
    SELECT
        *,
        row_number() OVER () AS row_key
    FROM _in
),

items AS (
    SELECT
        row_key,
        unnest(completion_ids) AS completion_id,
        generate_subscripts(completion_ids, 1) AS pos
    FROM numbered
),

texts AS (
    SELECT
        i.row_key,
        list_transform(list_sort(list({pos: i.pos, text: r.text})), lambda t: t.text) AS completions,
        count(*) AS n
    FROM items AS i
    INNER JOIN responses AS r ON i.completion_id = r.id
    GROUP BY i.row_key
)

SELECT
    n.prompt_id,
    p.split,
    n.round_id,
    p.messages::VARCHAR AS prompt,
    p.text AS prompt_text,
    t.completions,
    n.completion_ids,
    n.scores,
    n.source,
    n.feedback_ids
FROM numbered AS n
INNER JOIN texts AS t ON n.row_key = t.row_key AND t.n = len(n.completion_ids)
INNER JOIN prompts AS p ON n.prompt_id = p.id
