-- An edited pairwise annotation that no longer answers an optional aspect question: copy the annotator's human
-- comparisons of the pair it no longer gives to feedback_history (annotation_delete_comparisons then removes them).
-- $judges, $a, $b: parallel VARCHAR[] lists, one entry per pairwise annotation pulled; $keep: ids of the new rows.
WITH scope AS (
    SELECT
        unnest($judges::VARCHAR []) AS judge,
        unnest($a::VARCHAR []) AS response_a,
        unnest($b::VARCHAR []) AS response_b
)

INSERT INTO feedback_history (feedback_table, feedback_id, row_json)
SELECT
    'comparisons' AS feedback_table,
    c.id AS feedback_id,
    to_json(c) AS row_json
FROM comparisons AS c
INNER JOIN scope
    ON c.judge = scope.judge AND c.response_a = scope.response_a AND c.response_b = scope.response_b
WHERE c.source = 'human' AND NOT list_contains($keep::VARCHAR [], c.id)
RETURNING feedback_id
