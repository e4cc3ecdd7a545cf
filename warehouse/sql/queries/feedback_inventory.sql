-- Feedback the warehouse holds, for a build whose source found none: rows, sources and rounds per table
-- (per aspect for ratings), so the error can say which options would select them.
WITH feedback AS (
    SELECT 'comparisons' AS kind, NULL::VARCHAR AS aspect, source, round_id FROM comparisons
    UNION ALL SELECT 'rankings', NULL, source, round_id FROM rankings
    UNION ALL SELECT 'ratings', aspect, source, round_id FROM ratings
    UNION ALL SELECT 'step_labels', NULL, source, round_id FROM step_labels
    UNION ALL SELECT 'corrections', NULL, source, round_id FROM corrections
)

SELECT
    kind,
    aspect,
    count(*) AS n,
    list_sort(list(DISTINCT source)) AS sources,
    list_sort(list(DISTINCT round_id)) AS rounds
FROM feedback
GROUP BY kind, aspect
ORDER BY kind, aspect
