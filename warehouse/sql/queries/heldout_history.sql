-- Held-out figures of every evaluated round, oldest first (for the stopping rule), with the reward model that
-- scored a reward-model figure.
SELECT e.round_id, e.metric, e.value, e.details ->> '$.reward_model' AS reward_model
FROM evaluations AS e
JOIN rounds AS r ON r.id = e.round_id
WHERE e.kind = 'heldout' AND e.value IS NOT NULL
ORDER BY r.created_at, r.id
