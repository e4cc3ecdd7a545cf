-- Feedback the warehouse holds, for a build whose source found none: rows, sources and rounds per table
-- (per aspect for ratings), so the error can say which options would select them.
SELECT 'comparisons' AS kind, NULL::VARCHAR AS aspect, count(*) AS n,
       list_sort(list(DISTINCT source)) AS sources, list_sort(list(DISTINCT round_id)) AS rounds
FROM comparisons HAVING count(*) > 0
UNION ALL SELECT 'rankings', NULL, count(*), list_sort(list(DISTINCT source)), list_sort(list(DISTINCT round_id))
FROM rankings HAVING count(*) > 0
UNION ALL SELECT 'ratings', aspect, count(*), list_sort(list(DISTINCT source)), list_sort(list(DISTINCT round_id))
FROM ratings GROUP BY aspect
UNION ALL SELECT 'step_labels', NULL, count(*), list_sort(list(DISTINCT source)), list_sort(list(DISTINCT round_id))
FROM step_labels HAVING count(*) > 0
UNION ALL SELECT 'corrections', NULL, count(*), list_sort(list(DISTINCT source)), list_sort(list(DISTINCT round_id))
FROM corrections HAVING count(*) > 0
ORDER BY kind, aspect
