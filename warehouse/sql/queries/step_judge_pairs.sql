-- Step judges (AI, reward model) measured on the steps people labelled: one row per step that a non-human judge and a
-- person both labelled (-1 / 0 / +1; unlabelled steps left out), with the person and the prompt's split.
-- $round_id: NULL for all rounds; else only the judge's labels of that round.
SELECT
    j.judge,
    j.response_id,
    j.step_index,
    j.label AS judge_label,
    h.judge AS person,
    h.label AS human_label,
    p.split
FROM step_labels AS j
INNER JOIN step_labels AS h
    ON j.response_id = h.response_id AND j.step_index = h.step_index AND h.source = 'human'
INNER JOIN prompts AS p ON j.prompt_id = p.id
WHERE
    j.source <> 'human'
    AND j.label IS NOT NULL
    AND h.label IS NOT NULL
    AND ($round_id IS NULL OR j.round_id = $round_id)
ORDER BY j.judge, j.response_id, h.judge, j.step_index
