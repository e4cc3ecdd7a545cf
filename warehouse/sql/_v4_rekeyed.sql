-- Schema v4: one feedback table's re-keyed rows (_v4_{{table}}) replace their old versions; of copies that became
-- one row the earliest is kept and the others go to feedback_history; id_rekeys records every changed id.
INSERT INTO feedback_history (feedback_table, feedback_id, row_json)
SELECT '{{table}}', x.id, to_json(x) FROM (
    SELECT * EXCLUDE (_old_id, _source) FROM _v4_{{table}}
    QUALIFY row_number() OVER (PARTITION BY id ORDER BY created_at, _old_id) > 1
) AS x;
DELETE FROM {{table}} WHERE id IN (SELECT _old_id FROM _v4_{{table}});
INSERT INTO {{table}} BY NAME
SELECT * EXCLUDE (_old_id, _source) FROM _v4_{{table}}
QUALIFY row_number() OVER (PARTITION BY id ORDER BY created_at, _old_id) = 1;
INSERT INTO id_rekeys (table_name, old_id, new_id, version)
SELECT '{{table}}', _old_id, id, 4 FROM _v4_{{table}} WHERE _old_id <> id;
