-- Deterministic row order for binary snapshots (same rows in, same bytes and content hash out): sorted by ids,
-- which identify a row (binary_dedupe and binary_from_ratings give one row per prompt and completion).
SELECT * FROM _in ORDER BY prompt_id, completion_id
