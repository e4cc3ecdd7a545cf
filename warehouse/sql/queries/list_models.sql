-- Registered models, newest first.
SELECT
    id,
    uri,
    role,
    parent_id,
    training_run_id,
    created_at
FROM models
ORDER BY created_at DESC, id
