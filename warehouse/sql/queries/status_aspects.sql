-- Comparisons, rankings, ratings and corrections per aspect (what builds select with -o aspect=).
SELECT 'comparisons' AS kind, aspect, count(*) AS n FROM comparisons GROUP BY ALL
UNION ALL SELECT 'rankings', aspect, count(*) FROM rankings GROUP BY ALL
UNION ALL SELECT 'ratings', aspect, count(*) FROM ratings GROUP BY ALL
UNION ALL SELECT 'corrections', aspect, count(*) FROM corrections GROUP BY ALL
ORDER BY kind, aspect
