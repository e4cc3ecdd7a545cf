-- Annotation tasks sent to Label Studio; $round_id: NULL for every round.
SELECT
    id,
    kind,
    round_id,
    project_id,
    task_id,
    item_ids,
    CAST(payload AS VARCHAR) AS payload,
    status
FROM annotation_tasks
WHERE project_id IS NOT NULL AND task_id IS NOT NULL AND ($round_id IS NULL OR round_id = $round_id)
ORDER BY project_id, task_id
