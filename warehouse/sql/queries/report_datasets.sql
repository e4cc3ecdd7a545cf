-- Dataset snapshots, oldest first, with their rows per split and content hash.
SELECT id, kind, row_counts, content_hash, created_at
FROM datasets
ORDER BY created_at, id
