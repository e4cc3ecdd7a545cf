-- Keep pairs whose preference probability is at least $min_margin away from a coin flip.
SELECT * FROM _in WHERE abs(p_lo - 0.5) >= $min_margin
