-- Deterministic row order for correction snapshots (same rows in, same bytes and content hash out): sorted by ids,
-- which identify a row, instead of by every text column.
SELECT * FROM _in ORDER BY prompt_id, answer_id, identity, feedback_ids
