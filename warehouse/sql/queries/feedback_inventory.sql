-- Feedback the warehouse holds, for a build whose source found none: rows, sources, rounds and judges per table
-- (per aspect for ratings; for comparisons, rankings and corrections per aspect other than 'overall'), so the error
-- can say which options would select them.
WITH feedback AS (
    SELECT 'comparisons' AS kind, nullif(aspect, 'overall') AS aspect, source, round_id, judge FROM comparisons
    UNION ALL SELECT 'rankings', nullif(aspect, 'overall'), source, round_id, judge FROM rankings
    UNION ALL SELECT 'ratings', aspect, source, round_id, judge FROM ratings
    UNION ALL SELECT 'step_labels', NULL, source, round_id, judge FROM step_labels
    UNION ALL SELECT 'corrections', nullif(aspect, 'overall'), source, round_id, judge FROM corrections
)

SELECT
    kind,
    aspect,
    count(*) AS n,
    list_sort(list(DISTINCT source)) AS sources,
    list_sort(list(DISTINCT round_id)) AS rounds,
    list_sort(list(DISTINCT judge)) AS judges
FROM feedback
GROUP BY kind, aspect
ORDER BY kind, aspect
