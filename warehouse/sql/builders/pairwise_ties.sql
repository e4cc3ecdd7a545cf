-- Drop ties (p = 0.5) unless they are kept as soft 0.5 labels.
SELECT * FROM _in WHERE $ties = 'keep' OR p_lo <> 0.5
