-- Deterministic row order for the snapshot: same rows in, same bytes (and content hash) out.
SELECT * FROM _in ORDER BY ALL
