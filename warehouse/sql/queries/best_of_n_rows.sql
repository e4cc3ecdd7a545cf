-- Best-of-N: samples of prompts with a reference answer, two or more per round and prompt (none a branch or an
-- edit of another response), each with every rating of it that is not a person's (one row per rating; a sample no
-- judge scored once, with NULL judge). $round_id: one round, or NULL for all.
WITH samples AS (
    SELECT
        r.id,
        r.round_id,
        r.prompt_id,
        r.text,
        r.sample_index,
        p.reference
    FROM responses AS r
    INNER JOIN prompts AS p ON r.prompt_id = p.id
    WHERE
        p.reference IS NOT NULL
        AND r.parent_id IS NULL
        AND r.origin IN ('policy', 'import')
        AND ($round_id IS NULL OR r.round_id = $round_id)
    QUALIFY count(*) OVER (PARTITION BY r.round_id, r.prompt_id) >= 2
)

SELECT
    s.*,
    t.judge,
    t.aspect,
    t.score
FROM samples AS s
LEFT JOIN ratings AS t ON s.id = t.response_id AND t.source <> 'human' AND t.score IS NOT NULL
ORDER BY s.round_id, s.prompt_id, s.sample_index, s.id, t.judge, t.aspect
