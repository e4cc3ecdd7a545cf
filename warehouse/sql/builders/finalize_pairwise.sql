-- Deterministic row order for pairwise snapshots (same rows in, same bytes and content hash out): sorted by ids,
-- which identify a row (one row per prompt, chosen, rejected and source), instead of by every text column.
SELECT * FROM _in ORDER BY prompt_id, chosen_id, rejected_id, source
