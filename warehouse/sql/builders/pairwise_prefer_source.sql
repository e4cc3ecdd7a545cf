-- Where a pair was judged by several source tiers, keep the highest one (human > rule > ai > reward_model).
WITH tiered AS (
    SELECT
        *,
        CASE source WHEN 'human' THEN 0 WHEN 'rule' THEN 1 WHEN 'ai' THEN 2 ELSE 3 END AS tier
    FROM _in
)

SELECT * EXCLUDE (tier)
FROM tiered
QUALIFY tier = min(tier) OVER (PARTITION BY prompt_id, lo, hi)
