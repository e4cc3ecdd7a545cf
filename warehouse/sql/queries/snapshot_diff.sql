-- Row by row difference of two snapshots of one kind, registered as _old and _new, each with a _key column (the
-- kind's id columns joined), into the temporary table _diff. Rows with the same key are matched in a stable order
-- (the n-th with the n-th). Each row: the split (the new one where the row exists there), its change (added,
-- removed, moved: same row in the other split, changed: other content, same), its key, and for moved and changed
-- rows both rows as JSON.
CREATE TEMP TABLE _diff AS
WITH old AS (
    SELECT _key, split, to_json(o) AS body,
           row_number() OVER (PARTITION BY _key ORDER BY to_json(o)) AS nth
    FROM _old AS o
),
new AS (
    SELECT _key, split, to_json(n) AS body,
           row_number() OVER (PARTITION BY _key ORDER BY to_json(n)) AS nth
    FROM _new AS n
)
SELECT
    coalesce(new.split, old.split) AS split,
    CASE
        WHEN old._key IS NULL THEN 'added'
        WHEN new._key IS NULL THEN 'removed'
        WHEN old.split <> new.split THEN 'moved'
        WHEN old.body <> new.body THEN 'changed'
        ELSE 'same'
    END AS change,
    coalesce(new._key, old._key) AS key,
    CASE WHEN old.body <> new.body THEN old.body END AS old_row,
    CASE WHEN old.body <> new.body THEN new.body END AS new_row
FROM old
FULL OUTER JOIN new ON old._key = new._key AND old.nth = new.nth
