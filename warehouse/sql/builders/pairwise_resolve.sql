-- Resolve several verdicts on one pair: 'drop' contradictory groups, 'majority' vote (p = share of the
-- winning side, an even split is a tie), or 'mean' of the probabilities.
SELECT
    prompt_id,
    lo,
    hi,
    source,
    round_id,
    margin_lo,
    feedback_ids,
    CASE
        WHEN NOT contradictory OR $aggregate = 'mean' THEN mean_p
        ELSE n_lo::DOUBLE / (n_lo + n_hi)
    END AS p_lo
FROM _in
WHERE NOT contradictory OR $aggregate <> 'drop'
