-- Join prompt and completion texts onto SFT rows.
SELECT
    s.prompt_id,
    p.split,
    s.round_id,
    p.messages::VARCHAR AS prompt,
    p.text AS prompt_text,
    r.text AS completion,
    s.completion_id,
    s.score,
    s.source,
    s.feedback_ids
FROM _in AS s
INNER JOIN prompts AS p ON s.prompt_id = p.id
INNER JOIN responses AS r ON s.completion_id = r.id
