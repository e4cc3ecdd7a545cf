-- Listwise AI judges measured (alignloop judge report): one row per AI ranking with the orders it was shown in
-- (permutations) and its judge's replies (in meta), its scores (Borda points: equal ones are a tie), the lengths of
-- its responses in its best-first order, the orders people gave the same responses on the same aspect, and people's
-- pairwise verdicts ([winner, loser], the latest per pair) on pairs of its responses, same aspect.
-- $round_id: NULL for all rounds; else only that round's rankings.
WITH ai AS (
    SELECT
        id,
        prompt_id,
        judge,
        aspect,
        response_ids,
        scores,
        permutations,
        meta
    FROM rankings
    WHERE source = 'ai' AND ($round_id IS NULL OR round_id = $round_id)
),

lengths AS (
    SELECT
        a.id,
        list(length(r.text) ORDER BY u.pos) AS lengths
    FROM ai AS a, unnest(a.response_ids) WITH ORDINALITY AS u (response_id, pos)
    LEFT JOIN responses AS r ON u.response_id = r.id
    GROUP BY a.id
),

people AS (
    SELECT
        a.id,
        list(h.response_ids ORDER BY h.id) AS human_orders
    FROM ai AS a
    INNER JOIN rankings AS h
        ON
            h.prompt_id = a.prompt_id AND h.source = 'human' AND h.aspect = a.aspect
            AND list_sort(h.response_ids) = list_sort(a.response_ids)
    GROUP BY a.id
),

decided AS (
    -- include: _human_decided
),

pairs AS (
    SELECT
        a.id,
        list([v.won, v.lost] ORDER BY v.won, v.lost) AS human_pairs
    FROM ai AS a
    INNER JOIN decided AS v
        ON
            v.prompt_id = a.prompt_id AND v.aspect = a.aspect
            AND list_contains(a.response_ids, v.won) AND list_contains(a.response_ids, v.lost)
    GROUP BY a.id
)

SELECT
    a.judge,
    a.aspect,
    a.response_ids,
    a.scores,
    a.permutations,
    a.meta,
    l.lengths,
    p.human_orders,
    v.human_pairs
FROM ai AS a
LEFT JOIN lengths AS l ON a.id = l.id
LEFT JOIN people AS p ON a.id = p.id
LEFT JOIN pairs AS v ON a.id = v.id
ORDER BY a.judge, a.aspect, a.id
