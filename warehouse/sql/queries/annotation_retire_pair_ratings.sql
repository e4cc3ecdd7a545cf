-- An edited pairwise annotation that no longer rates a response on a criterion: copy the annotator's human ratings
-- of the pair's responses on those criteria it no longer gives to feedback_history (annotation_delete_ratings then
-- removes them). $judges, $responses: parallel VARCHAR[] lists, one entry per response of each pairwise annotation
-- pulled; $aspects: the criteria the pairwise config rates; $keep: ids of the new rows.
WITH scope AS (
    -- include: _annotator_responses
)

INSERT INTO feedback_history (feedback_table, feedback_id, row_json)
SELECT
    'ratings' AS feedback_table,
    r.id AS feedback_id,
    to_json(r) AS row_json
FROM ratings AS r
INNER JOIN scope ON r.judge = scope.judge AND r.response_id = scope.response_id
WHERE
    r.source = 'human'
    AND list_contains($aspects::VARCHAR [], r.aspect)
    AND NOT list_contains($keep::VARCHAR [], r.id)
RETURNING feedback_id
