-- Responses per round, rounds in name order (which rounds a command could work on).
SELECT round_id, count(*) AS n
FROM responses
GROUP BY round_id
ORDER BY round_id
