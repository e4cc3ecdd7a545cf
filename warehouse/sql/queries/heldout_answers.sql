-- One model's answers in a held-out round, with the prompt they answer.
SELECT r.id, r.prompt_id, p.messages, r.text
FROM responses AS r
JOIN prompts AS p ON p.id = r.prompt_id
WHERE r.round_id = $round_id AND r.model_id = $model_id
ORDER BY r.prompt_id, r.sample_index
