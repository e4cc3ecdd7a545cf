-- Rating judges (AI, reward model, rule) measured on the pairs people compared: for each human comparison that a
-- or b won (the latest verdict per pair and aspect, in whichever order it was shown) and each non-human judge and
-- aspect that scored both responses, aggregated per judge and aspect (see RatingJudgeQuality for each figure). A
-- rating aspect is measured on people's verdicts of the same aspect where a pair has one, else their overall one.
-- $round_id: NULL for all rounds; else only that round's ratings.
WITH decided AS (
    -- include: _human_decided
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
),

pairs AS (
    SELECT
        sw.judge,
        sw.aspect,
        p.split = 'test' AS heldout,
        -- TIE_RULE (pipelines/judges/report.py): accuracy over unequal scores, the tie rate, and ties as half
        (sw.score > sl.score)::DOUBLE AS agreed,
        CASE WHEN sw.score > sl.score THEN 1.0 WHEN sw.score = sl.score THEN 0.5 ELSE 0.0 END AS half,
        sw.score = sl.score AS tied,
        -- over pairs of unequal scores and lengths: the higher score went to the longer answer
        CASE
            WHEN sw.score <> sl.score AND length(rw.text) <> length(rl.text)
                THEN (sw.score > sl.score) = (length(rw.text) > length(rl.text))
        END AS longer_won
    FROM decided AS d
    INNER JOIN scored AS sw ON d.won = sw.response_id AND sw.n = 1 AND d.aspect IN (sw.aspect, 'overall')
    INNER JOIN scored AS sl ON d.lost = sl.response_id AND sl.n = 1 AND sw.judge = sl.judge AND sw.aspect = sl.aspect
    INNER JOIN responses AS rw ON d.won = rw.id
    INNER JOIN responses AS rl ON d.lost = rl.id
    INNER JOIN prompts AS p ON d.prompt_id = p.id
    QUALIFY row_number() OVER (
        PARTITION BY sw.judge, sw.aspect, least(d.won, d.lost), greatest(d.won, d.lost)
        ORDER BY d.aspect = sw.aspect DESC
    ) = 1
)

SELECT
    judge,
    aspect,
    count(*) AS human_pairs,
    avg(agreed) FILTER (WHERE NOT tied) AS human_accuracy,
    avg(half) AS human_accuracy_half,
    count(*) FILTER (WHERE heldout) AS heldout_pairs,
    avg(agreed) FILTER (WHERE heldout AND NOT tied) AS heldout_accuracy,
    avg(half) FILTER (WHERE heldout) AS heldout_accuracy_half,
    avg(tied::DOUBLE) AS score_ties,
    avg(longer_won::DOUBLE) AS longer
FROM pairs
GROUP BY judge, aspect
ORDER BY judge, aspect
