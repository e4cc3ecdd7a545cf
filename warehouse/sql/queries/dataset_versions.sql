-- Every dataset name with its versions and kind, for messages that name what the warehouse holds.
SELECT name, kind, list(version ORDER BY version) AS versions
FROM datasets
GROUP BY name, kind
ORDER BY name;
