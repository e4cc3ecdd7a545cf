-- Pairs of responses to the same prompt in a round, with what the AI judges said about each pair.
-- $round_id: the round; $origins: response origins to pair (e.g. ['policy', 'import']).
-- AI comparisons may show the pair in either order; winners and prob_a are mapped to this pair's order.
-- inconsistent: some AI judge changed its verdict when the two responses swapped positions.
-- disagreement: different AI judges gave different (valid) winners. Only overall verdicts (people label those).
WITH pairs AS (
    -- include: _response_pairs
),

ai AS (
    SELECT
        p.a_id,
        p.b_id,
        c.judge,
        c.consistent,
        CASE
            WHEN c.response_a = p.a_id THEN c.winner
            WHEN c.winner = 'a' THEN 'b'
            WHEN c.winner = 'b' THEN 'a'
            ELSE c.winner
        END AS winner,
        CASE WHEN c.response_a = p.a_id THEN c.prob_a ELSE 1 - c.prob_a END AS prob_a
    FROM pairs AS p
    INNER JOIN comparisons AS c
        ON
            c.source = 'ai'
            AND c.aspect = 'overall'
            AND (
                (c.response_a = p.a_id AND c.response_b = p.b_id)
                OR (c.response_a = p.b_id AND c.response_b = p.a_id)
            )
)

SELECT
    p.prompt_id,
    p.question,
    p.a_id,
    p.a_text,
    p.b_id,
    p.b_text,
    coalesce(bool_or(ai.consistent = false), false) AS inconsistent,
    coalesce(count(DISTINCT ai.winner) FILTER (WHERE ai.winner <> 'invalid') > 1, false) AS disagreement,
    list({'judge': ai.judge, 'winner': ai.winner, 'prob_a': ai.prob_a} ORDER BY ai.judge)
        FILTER (WHERE ai.judge IS NOT NULL) AS verdicts
FROM pairs AS p
LEFT JOIN ai ON p.a_id = ai.a_id AND p.b_id = ai.b_id
GROUP BY p.prompt_id, p.question, p.a_id, p.a_text, p.b_id, p.b_text, p.ka, p.kb
ORDER BY p.prompt_id, p.ka, p.kb
