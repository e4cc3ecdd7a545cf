-- Join prompt texts onto listwise rows (their completion texts come from the listwise_from_* stage), leaving out
-- rows with a completion whose response is missing.
SELECT
    l.prompt_id,
    p.split,
    l.round_id,
    p.messages::VARCHAR AS prompt,
    p.text AS prompt_text,
    l.completions,
    l.completion_ids,
    l.scores,
    l.source,
    l.feedback_ids
FROM _in AS l
INNER JOIN prompts AS p ON l.prompt_id = p.id
WHERE list_count(l.completions) = len(l.completions)
