-- Fragment: the row's source tier, lower wins for $prefer_human (human 0 > rule 1 > ai 2 > reward_model 3).
CASE source WHEN 'human' THEN 0 WHEN 'rule' THEN 1 WHEN 'ai' THEN 2 ELSE 3 END AS tier
