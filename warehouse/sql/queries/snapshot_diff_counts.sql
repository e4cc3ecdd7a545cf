-- Rows per split and kind of change of the snapshot diff in _diff (see snapshot_diff.sql).
SELECT split, change, count(*) AS n
FROM _diff
GROUP BY split, change
ORDER BY split, change
