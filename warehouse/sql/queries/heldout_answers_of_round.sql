-- Held-out answers stored under a held-out round, one per prompt (sample 0).
SELECT prompt_id, id, text
FROM responses
WHERE round_id = $round_id AND sample_index = 0
