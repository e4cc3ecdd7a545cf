-- Corrections a build starts from, per source, and how many identity rows were added (build notes).
SELECT source, count(*) FILTER (WHERE NOT identity) AS n, count(*) FILTER (WHERE identity) AS identity_rows
FROM _in
GROUP BY source
ORDER BY source
