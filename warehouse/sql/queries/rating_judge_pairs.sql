-- Rating judges (AI, reward model, rule) measured on the pairs people compared: for each human comparison that a
-- or b won (the latest verdict per pair, in whichever order it was shown) and each non-human judge and aspect that
-- scored both responses, the scores and lengths of the human's winner and loser, and the prompt's split.
-- $round_id: NULL for all rounds; else only that round's ratings.
WITH human AS (
    SELECT
        prompt_id,
        response_a,
        response_b,
        winner,
        row_number() OVER (
            PARTITION BY least(response_a, response_b), greatest(response_a, response_b)
            ORDER BY created_at DESC, id
        ) AS n
    FROM comparisons
    WHERE source = 'human' AND winner <> 'invalid'
),

decided AS (
    SELECT
        prompt_id,
        CASE winner WHEN 'a' THEN response_a ELSE response_b END AS won,
        CASE winner WHEN 'a' THEN response_b ELSE response_a END AS lost
    FROM human
    WHERE n = 1 AND winner IN ('a', 'b')
),

scored AS (
    SELECT
        response_id,
        judge,
        aspect,
        score,
        row_number() OVER (PARTITION BY response_id, judge, aspect ORDER BY created_at DESC, id) AS n
    FROM ratings
    WHERE source <> 'human' AND score IS NOT NULL AND ($round_id IS NULL OR round_id = $round_id)
)

SELECT
    sw.judge,
    sw.aspect,
    sw.score AS score_won,
    sl.score AS score_lost,
    length(rw.text) AS len_won,
    length(rl.text) AS len_lost,
    p.split
FROM decided AS d
INNER JOIN prompts AS p ON d.prompt_id = p.id
INNER JOIN scored AS sw ON d.won = sw.response_id AND sw.n = 1
INNER JOIN scored AS sl ON d.lost = sl.response_id AND sl.n = 1 AND sw.judge = sl.judge AND sw.aspect = sl.aspect
INNER JOIN responses AS rw ON d.won = rw.id
INNER JOIN responses AS rl ON d.lost = rl.id
ORDER BY sw.judge, sw.aspect, d.won, d.lost
