-- Held-out figures per round, in round order (the initial policy is evaluated as its own round).
SELECT e.round_id, r.policy_model_id, r.status, r.created_at, e.metric, e.value, e.details
FROM evaluations AS e
JOIN rounds AS r ON r.id = e.round_id
WHERE e.kind = 'heldout'
ORDER BY r.created_at, r.id, e.metric
