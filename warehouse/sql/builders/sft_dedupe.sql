-- One SFT row per completion (several rankings may pick the same response).
SELECT
    prompt_id,
    completion_id,
    min(round_id) AS round_id,
    max(score) AS score,
    min(source) AS source,
    list_sort(list_distinct(flatten(list(feedback_ids)))) AS feedback_ids
FROM _in
GROUP BY prompt_id, completion_id
