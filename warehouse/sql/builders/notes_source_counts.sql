-- Feedback rows a build starts from, per source (build notes).
SELECT source, count(*) AS n FROM _in GROUP BY source ORDER BY source
