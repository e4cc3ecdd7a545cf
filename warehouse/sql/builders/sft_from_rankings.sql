-- SFT rows from rankings: the top $per_prompt responses of each ranking (scores where the ranking has them).
-- With $prefer_human only the highest source tier's rankings of a prompt are kept.
WITH allowed AS (
    -- include: _rankings_allowed
),

kept AS (
    SELECT *
    FROM allowed
    QUALIFY NOT $prefer_human OR tier = min(tier) OVER (PARTITION BY prompt_id)
),

top AS (
    SELECT
        kept.*,
        unnest(range(1, least(len(kept.response_ids), $per_prompt) + 1)) AS pos
    FROM kept
)

SELECT
    prompt_id,
    round_id,
    response_ids[pos] AS completion_id,
    scores[pos] AS score,
    source,
    [id] AS feedback_ids
FROM top
WHERE scores[pos] IS NULL OR scores[pos] >= $min_score
