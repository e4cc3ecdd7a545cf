-- Join prompt and completion texts onto unpaired rows.
SELECT
    b.prompt_id,
    p.split,
    b.round_id,
    p.messages::VARCHAR AS prompt,
    p.text AS prompt_text,
    r.text AS completion,
    b.completion_id,
    b.label,
    b.source,
    b.feedback_ids
FROM _in AS b
INNER JOIN prompts AS p ON b.prompt_id = p.id
INNER JOIN responses AS r ON b.completion_id = r.id
