-- One row per completion: repeats with the same label merge; a completion labelled both ways is dropped.
SELECT
    prompt_id,
    completion_id,
    min(round_id) AS round_id,
    bool_and(label) AS label,
    min(source) AS source,
    list_sort(list_distinct(flatten(list(feedback_ids)))) AS feedback_ids
FROM _in
GROUP BY prompt_id, completion_id
HAVING bool_and(label) OR NOT bool_or(label)
