-- The newest snapshot of a dataset name (or one exact version when $version is not null).
SELECT id, name, version, kind, path, content_hash
FROM datasets
WHERE name = $name
  AND ($version IS NULL OR version = $version)
ORDER BY version DESC
LIMIT 1;
