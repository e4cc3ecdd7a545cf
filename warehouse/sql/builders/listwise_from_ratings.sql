-- Listwise rows from ratings: prompts with at least $k rated responses; the $k best, best first.
SELECT
    prompt_id,
    min(round_id) AS round_id,
    list(response_id ORDER BY score DESC, response_id ASC)[1:$k] AS completion_ids,
    list(score ORDER BY score DESC, response_id ASC)[1:$k] AS scores,
    min(source) AS source,
    list_sort(flatten(list(feedback_ids))) AS feedback_ids
FROM _rated
GROUP BY prompt_id
HAVING count(*) >= $k
