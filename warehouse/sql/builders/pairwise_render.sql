-- Orient each pair (chosen = the preferred side; a tie keeps lo first) and join prompt and response texts.
WITH oriented AS (
    SELECT
        prompt_id,
        round_id,
        CASE WHEN p_lo >= 0.5 THEN lo ELSE hi END AS chosen_id,
        CASE WHEN p_lo >= 0.5 THEN hi ELSE lo END AS rejected_id,
        greatest(p_lo, 1 - p_lo) AS p,
        CASE WHEN p_lo >= 0.5 THEN margin_lo ELSE -margin_lo END AS margin,
        source,
        feedback_ids
    FROM _in
)

SELECT
    o.prompt_id,
    p.split,
    o.round_id,
    p.messages::VARCHAR AS prompt,
    p.text AS prompt_text,
    c.text AS chosen,
    r.text AS rejected,
    o.chosen_id,
    o.rejected_id,
    CASE WHEN $soft_labels OR o.p = 0.5 THEN o.p ELSE 1.0 END AS prob,
    o.margin,
    o.source,
    o.feedback_ids
FROM oriented AS o
INNER JOIN prompts AS p ON o.prompt_id = p.id
INNER JOIN responses AS c ON o.chosen_id = c.id
INNER JOIN responses AS r ON o.rejected_id = r.id
