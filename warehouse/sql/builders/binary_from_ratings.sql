-- Unpaired (KTO) rows from rated responses: desirable when score >= $desirable_min,
-- undesirable when score <= $undesirable_max, scores in between are left out.
SELECT
    prompt_id,
    round_id,
    response_id AS completion_id,
    score >= $desirable_min AS label,
    source,
    feedback_ids
FROM _rated
WHERE score >= $desirable_min OR score <= $undesirable_max
