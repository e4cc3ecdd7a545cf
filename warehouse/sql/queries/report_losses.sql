-- Training curves of every run, labelled by its round (if any), method and dataset.
SELECT t.round_id, m.run_id, t.method, t.dataset_id, m.step, m.name, m.value
FROM training_metrics AS m
JOIN training_runs AS t ON t.id = m.run_id
WHERE m.name IN ('loss', 'accuracy', 'margin', 'rewards/margins', 'rewards/accuracies')
ORDER BY t.started_at, m.run_id, m.step
