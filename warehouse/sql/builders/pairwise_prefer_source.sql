-- Where a pair was judged by several source tiers, keep the highest one (human > rule > ai > reward_model).
-- A semi join with each pair's best tier (not a window): rows stream through instead of being sorted.
WITH tiered AS (
    SELECT
        *,
        -- include: _source_tier
    FROM _in
),

best AS (
    SELECT
        prompt_id,
        lo,
        hi,
        min(tier) AS tier
    FROM tiered
    GROUP BY prompt_id, lo, hi
)

SELECT t.* EXCLUDE (tier)
FROM tiered AS t
SEMI JOIN best AS b ON t.prompt_id = b.prompt_id AND t.lo = b.lo AND t.hi = b.hi AND t.tier = b.tier
