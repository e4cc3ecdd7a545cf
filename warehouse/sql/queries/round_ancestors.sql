-- The rounds before a round along its parents, nearest first, at most $depth of them.
WITH RECURSIVE chain(id, parent, depth) AS (
    SELECT id, parent_round_id, 0 FROM rounds WHERE id = $round_id
    UNION ALL
    SELECT r.id, r.parent_round_id, c.depth + 1
    FROM rounds r JOIN chain c ON r.id = c.parent
    WHERE c.depth < $depth
)
SELECT id FROM chain WHERE depth > 0 ORDER BY depth
