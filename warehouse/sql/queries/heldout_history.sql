-- Held-out figures of every evaluated round, oldest first (for the stopping rule).
SELECT e.round_id, e.metric, e.value
FROM evaluations AS e
JOIN rounds AS r ON r.id = e.round_id
WHERE e.kind = 'heldout' AND e.value IS NOT NULL
ORDER BY r.created_at, r.id
