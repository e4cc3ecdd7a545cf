-- Per column, the moved and changed rows of the snapshot diff in _diff whose value differs in it.
SELECT col, count(*) AS n
FROM (SELECT old_row, new_row, unnest(json_keys(old_row)) AS col FROM _diff WHERE old_row IS NOT NULL)
WHERE col <> '_key' AND (old_row -> col) IS DISTINCT FROM (new_row -> col)
GROUP BY col
ORDER BY col
