-- Keep pairs with a real score gap of at least $min_score_gap (equal scores carry no preference).
SELECT * FROM _in WHERE margin IS NULL OR (margin > 0 AND margin >= $min_score_gap)
