-- Listwise rows from ratings: prompts with at least $k rated responses; the $k best, best first (ties on score
-- by response id). One unordered list of (-score, id) structs sorted per prompt: cheaper than ordered aggregates.
WITH per_prompt AS (
    SELECT
        prompt_id,
        min(round_id) AS round_id,
        list_sort(list({neg_score: -score, id: response_id}))[1:$k] AS top,
        min(source) AS source,
        list_sort(flatten(list(feedback_ids))) AS feedback_ids
    FROM _rated
    GROUP BY prompt_id
    HAVING count(*) >= $k
)

SELECT
    prompt_id,
    round_id,
    list_transform(top, lambda t: t.id) AS completion_ids,
    list_transform(top, lambda t: -t.neg_score) AS scores,
    source,
    feedback_ids
FROM per_prompt
