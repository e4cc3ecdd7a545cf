-- Deterministic row order for listwise snapshots (same rows in, same bytes and content hash out): sorted by ids,
-- which identify a row, instead of by every text column.
SELECT * FROM _in ORDER BY prompt_id, completion_ids, source, feedback_ids
