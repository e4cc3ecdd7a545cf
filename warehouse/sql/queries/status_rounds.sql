-- Rows per round: responses and each feedback kind.
WITH per_round AS (
    SELECT round_id, 'responses' AS what, count(*) AS n FROM responses GROUP BY ALL
    UNION ALL SELECT round_id, 'comparisons', count(*) FROM comparisons GROUP BY ALL
    UNION ALL SELECT round_id, 'rankings', count(*) FROM rankings GROUP BY ALL
    UNION ALL SELECT round_id, 'ratings', count(*) FROM ratings GROUP BY ALL
    UNION ALL SELECT round_id, 'step_labels', count(*) FROM step_labels GROUP BY ALL
    UNION ALL SELECT round_id, 'corrections', count(*) FROM corrections GROUP BY ALL
)
SELECT r.id AS round_id, r.status, p.what, coalesce(p.n, 0) AS n
FROM rounds AS r
LEFT JOIN per_round AS p ON p.round_id = r.id
ORDER BY r.created_at, r.id, p.what
