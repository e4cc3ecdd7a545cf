-- The policy a round trained: the model folder registered by its training run.
SELECT m.uri, m.id
FROM training_runs AS t
JOIN models AS m ON m.id = t.output_model_id
WHERE t.round_id = $round_id
ORDER BY t.started_at DESC
LIMIT 1
