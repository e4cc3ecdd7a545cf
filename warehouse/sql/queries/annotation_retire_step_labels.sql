-- An edited step annotation that labels fewer steps: copy the step labels it no longer gives to feedback_history
-- (annotation_delete_step_labels then removes them). The scope is each annotator's (judge's) human labels on one
-- response; rows whose id is among the new ones stay (replace_feedback versions those).
-- $judges, $responses: parallel VARCHAR[] lists, one entry per step annotation pulled; $keep: ids of the new rows.
WITH scope AS (
    -- include: _annotator_responses
)

INSERT INTO feedback_history (feedback_table, feedback_id, row_json)
SELECT
    'step_labels' AS feedback_table,
    s.id AS feedback_id,
    to_json(s) AS row_json
FROM step_labels AS s
INNER JOIN scope ON s.judge = scope.judge AND s.response_id = scope.response_id
WHERE s.source = 'human' AND NOT list_contains($keep::VARCHAR [], s.id)
RETURNING feedback_id
