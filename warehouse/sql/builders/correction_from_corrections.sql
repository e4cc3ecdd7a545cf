-- Aligner Q-A-C rows, plus an identity subset (Q, A, A) of round($identity_fraction * n) rows chosen by a
-- hash of the correction id (deterministic, independent of insertion order) for the copy warm-up.
WITH allowed AS (
    SELECT
        c.*,
        -- include: _source_tier
    FROM corrections AS c
    WHERE
        c.aspect = $aspect
        AND list_contains($sources, c.source)
        AND (len($rounds) = 0 OR list_contains($rounds, c.round_id))
        AND (len($judges) = 0 OR list_contains($judges, c.judge))
    QUALIFY NOT $prefer_human OR tier = min(tier) OVER (PARTITION BY c.original_id)
),

picked AS (
    SELECT
        *,
        row_number() OVER (ORDER BY md5('identity:' || id)) <= round($identity_fraction * count(*) OVER ()) AS pick
    FROM allowed
),

qac AS (
    SELECT prompt_id, round_id, original_id AS answer_id, corrected_id AS correction_id, false AS identity,
        source, [id] AS feedback_ids
    FROM picked
    UNION ALL
    SELECT prompt_id, round_id, original_id AS answer_id, original_id AS correction_id, true AS identity,
        source, [id] AS feedback_ids
    FROM picked
    WHERE pick
)

SELECT
    q.prompt_id,
    p.split,
    q.round_id,
    p.messages::VARCHAR AS prompt,
    p.text AS prompt_text,
    a.text AS answer,
    c.text AS correction,
    q.answer_id,
    q.correction_id,
    q.identity,
    q.source,
    q.feedback_ids
FROM qac AS q
INNER JOIN prompts AS p ON q.prompt_id = p.id
INNER JOIN responses AS a ON q.answer_id = a.id
INNER JOIN responses AS c ON q.correction_id = c.id
