-- Each AI comparison paired with every human verdict on the same two responses and aspect (mapped to the AI row's
-- order). A judge's verdicts of an aspect other than overall are reported as their own judge ("judge [aspect]").
-- $round_id: NULL for every round.
SELECT
    CASE WHEN c.aspect = 'overall' THEN c.judge ELSE concat(c.judge, ' [', c.aspect, ']') END AS ai_judge,
    c.id AS item,
    c.winner AS ai_winner,
    h.judge AS annotator,
    CASE
        WHEN h.response_a = c.response_a THEN h.winner
        WHEN h.winner = 'a' THEN 'b'
        WHEN h.winner = 'b' THEN 'a'
        ELSE h.winner
    END AS human_winner
FROM comparisons AS c
INNER JOIN comparisons AS h
    ON
        h.source = 'human'
        AND h.winner <> 'invalid'
        AND h.aspect = c.aspect
        AND (
            (h.response_a = c.response_a AND h.response_b = c.response_b)
            OR (h.response_a = c.response_b AND h.response_b = c.response_a)
        )
WHERE c.source = 'ai' AND c.winner <> 'invalid' AND ($round_id IS NULL OR c.round_id = $round_id)
ORDER BY ai_judge, c.id, h.judge
