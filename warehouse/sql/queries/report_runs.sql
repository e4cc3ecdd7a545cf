-- Training runs, oldest first: method, dataset, round and status; the run's meta holds its steps and held-out figures.
SELECT id, method, dataset_id, round_id, status, started_at, meta
FROM training_runs
ORDER BY started_at, id
