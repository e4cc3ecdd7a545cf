-- Split oriented preference pairs into unpaired rows: chosen desirable, rejected undesirable (ties left out).
WITH pairs AS (
    SELECT
        prompt_id,
        round_id,
        CASE WHEN p_lo >= 0.5 THEN lo ELSE hi END AS chosen_id,
        CASE WHEN p_lo >= 0.5 THEN hi ELSE lo END AS rejected_id,
        source,
        feedback_ids
    FROM _in
    WHERE p_lo <> 0.5
)

SELECT prompt_id, round_id, chosen_id AS completion_id, true AS label, source, feedback_ids FROM pairs
UNION ALL
SELECT prompt_id, round_id, rejected_id AS completion_id, false AS label, source, feedback_ids FROM pairs
