-- Feedback rows per kind and source.
SELECT 'comparisons' AS kind, source, count(*) AS n FROM comparisons GROUP BY ALL
UNION ALL SELECT 'rankings', source, count(*) FROM rankings GROUP BY ALL
UNION ALL SELECT 'ratings', source, count(*) FROM ratings GROUP BY ALL
UNION ALL SELECT 'step_labels', source, count(*) FROM step_labels GROUP BY ALL
UNION ALL SELECT 'corrections', source, count(*) FROM corrections GROUP BY ALL
ORDER BY kind, source
