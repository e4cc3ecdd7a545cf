-- AI verdicts checked under position swap, and how many held (build notes).
SELECT
    count(consistent) AS checked,
    count(*) FILTER (WHERE consistent) AS held
FROM _in
WHERE source = 'ai'
