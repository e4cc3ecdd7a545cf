-- Fragment (included by rating_judge_pairs.sql and listwise_judge_rows.sql): people's latest verdict on each pair
-- and aspect (in whichever order it was shown), where a or b won: its prompt, aspect, winner and loser.
WITH latest AS (
    SELECT
        prompt_id,
        response_a,
        response_b,
        aspect,
        winner,
        row_number() OVER (
            PARTITION BY least(response_a, response_b), greatest(response_a, response_b), aspect
            ORDER BY created_at DESC, id
        ) AS n
    FROM comparisons
    WHERE source = 'human' AND winner <> 'invalid'
)

SELECT
    prompt_id,
    aspect,
    CASE winner WHEN 'a' THEN response_a ELSE response_b END AS won,
    CASE winner WHEN 'a' THEN response_b ELSE response_a END AS lost
FROM latest
WHERE n = 1 AND winner IN ('a', 'b')
