-- The first $n keys (in key order) of each kind of change but 'same' in the snapshot diff in _diff.
SELECT change, key
FROM _diff
WHERE change <> 'same'
QUALIFY row_number() OVER (PARTITION BY change ORDER BY key) <= $n
ORDER BY change, key
