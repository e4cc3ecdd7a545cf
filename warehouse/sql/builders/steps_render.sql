-- Join the prompt onto step-labelled rows.
SELECT
    s.prompt_id,
    p.split,
    s.round_id,
    p.messages::VARCHAR AS prompt,
    p.text AS prompt_text,
    s.completion_id,
    s.steps,
    s.labels,
    s.source,
    s.feedback_ids
FROM _in AS s
INNER JOIN prompts AS p ON s.prompt_id = p.id
