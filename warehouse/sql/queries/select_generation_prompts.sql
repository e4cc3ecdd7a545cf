-- Prompts for a generation round: optional split and tag filters, a stable order (by id), an optional limit.
-- Parameters: $split (VARCHAR or NULL), $tags (VARCHAR[] or NULL: any tag matches), $limit (BIGINT or NULL).
SELECT
    id,
    messages
FROM prompts
WHERE
    ($split IS NULL OR split = $split)
    AND (CAST($tags AS VARCHAR []) IS NULL OR len(list_intersect(tags, CAST($tags AS VARCHAR []))) > 0)
ORDER BY id
LIMIT coalesce(CAST($limit AS BIGINT), 9223372036854775807)
