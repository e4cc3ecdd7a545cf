-- Group judgments of the same unordered pair from the same source tier.
-- p_lo = P(lo better), lo/hi = the pair's ids in sorted order. A group with votes both ways is contradictory.
-- feedback_ids: every judgment's feedback_id plus any feedback_ids (rated pairs), sorted.
WITH oriented AS (
    SELECT
        prompt_id,
        round_id,
        least(response_a, response_b) AS lo,
        greatest(response_a, response_b) AS hi,
        CASE WHEN response_a < response_b THEN p_a ELSE 1 - p_a END AS p_lo,
        CASE WHEN response_a < response_b THEN margin ELSE -margin END AS margin_lo,
        source,
        feedback_id,
        feedback_ids
    FROM _in
    WHERE response_a <> response_b
)

SELECT
    prompt_id,
    lo,
    hi,
    source,
    min(round_id) AS round_id,
    count(*) AS n,
    count(*) FILTER (WHERE p_lo > 0.5) AS n_lo,
    count(*) FILTER (WHERE p_lo < 0.5) AS n_hi,
    avg(p_lo) AS mean_p,
    avg(margin_lo) AS margin_lo,
    list_sort(list_concat(
        coalesce(list(feedback_id) FILTER (WHERE feedback_id IS NOT NULL), []),
        coalesce(flatten(list(feedback_ids) FILTER (WHERE feedback_ids IS NOT NULL)), [])
    )) AS feedback_ids,
    count(*) FILTER (WHERE p_lo > 0.5) > 0 AND count(*) FILTER (WHERE p_lo < 0.5) > 0 AS contradictory
FROM oriented
GROUP BY prompt_id, lo, hi, source
