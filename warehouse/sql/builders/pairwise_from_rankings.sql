-- Pairwise judgments from rankings (best first): all pairs, adjacent pairs, or best vs rest.
WITH ranked AS (
    -- include: _rankings_allowed
),

first_pos AS (
    SELECT
        ranked.*,
        unnest(range(1, len(ranked.response_ids) + 1)) AS i
    FROM ranked
    WHERE len(ranked.response_ids) >= 2
),

pairs AS (
    SELECT
        first_pos.*,
        unnest(range(first_pos.i + 1, len(first_pos.response_ids) + 1)) AS j
    FROM first_pos
)

SELECT
    prompt_id,
    round_id,
    response_ids[i] AS response_a,
    response_ids[j] AS response_b,
    1.0 AS p_a,
    scores[i] - scores[j] AS margin,
    source,
    NULL::BOOLEAN AS consistent,
    id AS feedback_id,
    NULL::VARCHAR[] AS feedback_ids
FROM pairs
WHERE
    $ranking_pairs = 'all'
    OR ($ranking_pairs = 'adjacent' AND j = i + 1)
    OR ($ranking_pairs = 'best_vs_rest' AND i = 1)
