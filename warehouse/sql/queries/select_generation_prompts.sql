-- Prompts for a generation round: optional split and tag filters, a stable order (by id), an optional limit.
-- Parameters: $split (VARCHAR or NULL), $tags (VARCHAR[] or NULL: any tag matches), $limit (BIGINT or NULL),
-- $fresh_for (VARCHAR or NULL: only prompts no other round than this one has sampled from a policy, so each
-- round of an iteration gets new prompts and a rerun of the round gets the same ones).
SELECT
    id,
    messages
FROM prompts
WHERE
    ($split IS NULL OR split = $split)
    AND (CAST($tags AS VARCHAR []) IS NULL OR len(list_intersect(tags, CAST($tags AS VARCHAR []))) > 0)
    AND (
        CAST($fresh_for AS VARCHAR) IS NULL
        OR id NOT IN (
            SELECT r.prompt_id
            FROM responses AS r
            WHERE r.origin = 'policy' AND r.round_id <> CAST($fresh_for AS VARCHAR)
        )
    )
ORDER BY id
LIMIT coalesce(CAST($limit AS BIGINT), 9223372036854775807)
