-- The round the round flow worked on last (a round it ran has its configuration recorded), for round='next'.
SELECT id, status, config
FROM rounds
WHERE config IS NOT NULL
ORDER BY updated_at DESC, id DESC
LIMIT 1
