-- Listwise rows from ratings: prompts with at least $k rated responses; the $k best, best first (ties on score
-- by response id), with their texts (a NULL text where the response is missing; render leaves such rows out).
-- One unordered list of (-score, id, text) structs sorted per prompt: cheaper than ordered aggregates, and the
-- texts are looked up once per rated response instead of unnesting the lists and grouping them again.
WITH per_prompt AS (
    SELECT
        r.prompt_id,
        min(r.round_id) AS round_id,
        list_sort(list({neg_score: -r.score, id: r.response_id, text: t.text}))[1:$k] AS top,
        min(r.source) AS source,
        list_sort(flatten(list(r.feedback_ids))) AS feedback_ids
    FROM _rated AS r
    LEFT JOIN responses AS t ON r.response_id = t.id
    GROUP BY r.prompt_id
    HAVING count(*) >= $k
)

SELECT
    prompt_id,
    round_id,
    list_transform(top, lambda t: t.id) AS completion_ids,
    list_transform(top, lambda t: -t.neg_score) AS scores,
    list_transform(top, lambda t: t.text) AS completions,
    source,
    feedback_ids
FROM per_prompt
