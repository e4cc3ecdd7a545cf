-- alignloop warehouse, schema version 4: imported rows are named by their content, and every import is recorded.
--
-- Up to v3 an imported response's id hashed the file's name (through its model, dataset:FORMAT:SOURCE) and an
-- imported label's id hashed it too (its judge, dataset:SOURCE): the same data set imported under another name
-- (hh.jsonl, then hh.jsonl.gz) was stored twice. From v4 an imported response is its prompt, text, origin and steps
-- (ids.imported_response_id) and an imported label is who gave it, the items and the label (ids.label_id); which
-- file brought which rows, and when, is in imports and import_rows.
--
-- The migration re-keys the imported rows with the functions the importer calls (warehouse/id_functions.py), so a
-- re-import of the same files adds nothing; copies that become one row keep the earliest. Every row that referred to
-- a re-keyed id is changed to the new one, and a row whose own id hashed a re-keyed id (an AI judge's verdict on an
-- imported pair, an Aligner correction, a Label Studio task) gets the id its stage now computes, where its old id is
-- exactly what that stage made (otherwise it keeps its id). id_rekeys maps every old id to its new one (snapshots
-- built before v4 name the old ids); a label merged into an earlier copy is kept in feedback_history.

CREATE TABLE IF NOT EXISTS imports (
    id VARCHAR PRIMARY KEY,          -- hash of the file's name, its sha256 and the import's options
    path VARCHAR NOT NULL,           -- as given to the import
    file_name VARCHAR NOT NULL,
    sha256 VARCHAR,                  -- of the bytes read; NULL for imports made before v4 (recorded by this migration)
    bytes BIGINT,
    format VARCHAR,                  -- the record format found (hh-rlhf, prm800k, generic, ...)
    source VARCHAR NOT NULL,         -- the source name stored with its prompts
    round_id VARCHAR,
    options JSON,
    counts JSON,                     -- the import's summary: records read, rows new and already present per table
    imported_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);

-- Which rows each import carried; is_new: it stored the row (false: the row was already there).
CREATE TABLE IF NOT EXISTS import_rows (
    import_id VARCHAR NOT NULL,
    table_name VARCHAR NOT NULL,
    row_id VARCHAR NOT NULL,
    is_new BOOLEAN NOT NULL,
    PRIMARY KEY (import_id, table_name, row_id)
);

-- Ids a migration changed: rows (and snapshots) made before it name old_id.
CREATE TABLE IF NOT EXISTS id_rekeys (
    table_name VARCHAR NOT NULL,
    old_id VARCHAR NOT NULL,
    new_id VARCHAR NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (table_name, old_id)
);

-- Labels that came in a file without a labeller of their own were judged 'dataset:SOURCE'; who gave them is their
-- source (human or ai), as the importer names them now.
CREATE OR REPLACE TEMP MACRO _v4_labeller(judge, source) AS
    CASE WHEN judge LIKE 'dataset:%' THEN 'dataset:' || source ELSE judge END;

-- A row's id after v4: an imported label's from its content; a stage's verdict whose id is the one its stage made
-- from the old response ids (it_was), that computed from the new ones (it_is); any other row keeps its id.
CREATE OR REPLACE TEMP MACRO _v4_new_id(imported, label_id, id, it_was, it_is) AS
    CASE WHEN imported THEN label_id WHEN id = it_was THEN it_is ELSE id END;

-- 1. New response ids: imported responses by their content; an Aligner correction of one by its new original.
CREATE TEMP TABLE _v4_responses AS
SELECT r.id AS old_id, alignloop_imported_response_id(r.prompt_id, r.text, r.origin, r.steps) AS new_id,
       true AS imported, split_part(m.uri, ':', 2) AS format,
       m.uri[length('dataset:' || split_part(m.uri, ':', 2) || ':') + 1:] AS source
FROM responses AS r
INNER JOIN models AS m ON r.model_id = m.id AND m.role = 'dataset';

INSERT INTO _v4_responses
SELECT r.id AS old_id,
       alignloop_response_id(r.prompt_id, r.model_id,
                             json_merge_patch(coalesce(r.sampling, '{}'), json_object('parent_id', k.new_id)),
                             r.seed, r.sample_index, r.text) AS new_id,
       false AS imported, NULL AS format, NULL AS source
FROM responses AS r
INNER JOIN _v4_responses AS k ON r.parent_id = k.old_id
WHERE r.origin = 'aligner'
    AND r.id = alignloop_response_id(
        r.prompt_id, r.model_id, json_merge_patch(coalesce(r.sampling, '{}'), json_object('parent_id', r.parent_id)),
        r.seed, r.sample_index, r.text
    );

-- 2. Each feedback row that names a re-keyed response, with its responses renamed and its new id.
CREATE TEMP TABLE _v4_comparisons AS
WITH mapped AS (
    SELECT c.*, c.id AS _old_id, a.source AS _source,
        coalesce(a.new_id, c.response_a) AS new_a, coalesce(b.new_id, c.response_b) AS new_b,
        coalesce(a.imported AND b.imported AND (c.judge LIKE 'dataset:%' OR c.judge LIKE 'labeler:%'), false) AS imp
    FROM comparisons AS c
    LEFT JOIN _v4_responses AS a ON c.response_a = a.old_id
    LEFT JOIN _v4_responses AS b ON c.response_b = b.old_id
    WHERE a.old_id IS NOT NULL OR b.old_id IS NOT NULL
)
SELECT * EXCLUDE (new_a, new_b, imp) REPLACE (
    _v4_new_id(imp, alignloop_comparison_label_id(_v4_labeller(judge, source), new_a, new_b, winner, prob_a, aspect),
               id, alignloop_judgment_id('pairwise', judge, to_json([response_a, response_b]), aspect),
               alignloop_judgment_id('pairwise', judge, to_json([new_a, new_b]), aspect)) AS id,
    new_a AS response_a, new_b AS response_b,
    CASE WHEN imp THEN _source END AS _source)
FROM mapped;

-- Lists of response ids (a ranking's order, a Label Studio task's items) that name a re-keyed response, renamed.
CREATE TEMP TABLE _v4_lists AS
WITH items AS (
    SELECT 'rankings' AS table_name, id, unnest(response_ids) AS item, generate_subscripts(response_ids, 1) AS pos
    FROM rankings
    UNION ALL
    SELECT 'annotation_tasks', id, unnest(item_ids), generate_subscripts(item_ids, 1) FROM annotation_tasks
)
SELECT i.table_name, i.id, list(coalesce(k.new_id, i.item) ORDER BY i.pos) AS new_ids,
    bool_and(coalesce(k.imported, false)) AS all_imported, min(k.source) AS source
FROM items AS i
LEFT JOIN _v4_responses AS k ON i.item = k.old_id
GROUP BY i.table_name, i.id
HAVING bool_or(k.old_id IS NOT NULL);

CREATE TEMP TABLE _v4_rankings AS
WITH mapped AS (
    SELECT r.*, r.id AS _old_id, n.new_ids,
        n.all_imported AND (r.judge LIKE 'dataset:%' OR r.judge LIKE 'labeler:%') AS imp,
        n.source AS _source
    FROM rankings AS r
    INNER JOIN _v4_lists AS n ON r.id = n.id AND n.table_name = 'rankings'
)
SELECT * EXCLUDE (new_ids, imp) REPLACE (
    _v4_new_id(imp, alignloop_ranking_label_id(_v4_labeller(judge, source), new_ids, aspect),
               id, alignloop_judgment_id('listwise', judge, to_json(list_sort(response_ids)), aspect),
               alignloop_judgment_id('listwise', judge, to_json(list_sort(new_ids)), aspect)) AS id,
    new_ids AS response_ids,
    CASE WHEN imp THEN _source END AS _source)
FROM mapped;

-- A rating judge's id names its kind (rating, binary, reward, verifier): the one that made the old id is used.
CREATE TEMP TABLE _v4_ratings AS
WITH mapped AS (
    SELECT r.*, r.id AS _old_id, k.source AS _source, k.new_id AS new_r,
        k.imported AND r.judge LIKE 'dataset:%' AS imp,
        (SELECT kind FROM (VALUES ('rating'), ('binary'), ('reward'), ('verifier')) AS kinds (kind)
         WHERE r.id = alignloop_judgment_id(kind, r.judge, json_object('response', r.response_id, 'aspect', r.aspect),
                                            'overall')) AS judge_kind
    FROM ratings AS r
    INNER JOIN _v4_responses AS k ON r.response_id = k.old_id
)
SELECT * EXCLUDE (new_r, imp, judge_kind) REPLACE (
    _v4_new_id(imp, alignloop_rating_label_id(_v4_labeller(judge, source), new_r, aspect, score, scale_min, scale_max),
               id, alignloop_judgment_id(judge_kind, judge, json_object('response', response_id, 'aspect', aspect),
                                         'overall'),
               alignloop_judgment_id(judge_kind, judge, json_object('response', new_r, 'aspect', aspect), 'overall'))
        AS id,
    new_r AS response_id,
    CASE WHEN imp THEN _source END AS _source)
FROM mapped;

CREATE TEMP TABLE _v4_step_labels AS
WITH mapped AS (
    SELECT s.*, s.id AS _old_id, k.source AS _source, k.new_id AS new_r,
        k.imported AND (s.judge LIKE 'dataset:%' OR s.judge LIKE 'labeler:%') AS imp
    FROM step_labels AS s
    INNER JOIN _v4_responses AS k ON s.response_id = k.old_id
)
SELECT * EXCLUDE (new_r, imp) REPLACE (
    _v4_new_id(imp, alignloop_step_label_id(_v4_labeller(judge, source), new_r, step_index, label, flagged),
               id, alignloop_judgment_id('step', judge, json_object('response', response_id, 'step', step_index),
                                         'overall'),
               alignloop_judgment_id('step', judge, json_object('response', new_r, 'step', step_index), 'overall'))
        AS id,
    new_r AS response_id,
    CASE WHEN imp THEN _source END AS _source)
FROM mapped;

CREATE TEMP TABLE _v4_corrections AS
WITH mapped AS (
    SELECT c.*, c.id AS _old_id, o.source AS _source,
        coalesce(o.new_id, c.original_id) AS new_o, coalesce(n.new_id, c.corrected_id) AS new_c,
        coalesce(o.imported AND n.imported AND c.judge LIKE 'dataset:%', false) AS imp
    FROM corrections AS c
    LEFT JOIN _v4_responses AS o ON c.original_id = o.old_id
    LEFT JOIN _v4_responses AS n ON c.corrected_id = n.old_id
    WHERE o.old_id IS NOT NULL OR n.old_id IS NOT NULL
)
SELECT * EXCLUDE (new_o, new_c, imp) REPLACE (
    _v4_new_id(imp, alignloop_correction_label_id(_v4_labeller(judge, source), new_o, new_c, aspect),
               id, alignloop_judgment_id('correction', judge, to_json([original_id]), aspect),
               alignloop_judgment_id('correction', judge, to_json([new_o]), aspect)) AS id,
    new_o AS original_id, new_c AS corrected_id,
    CASE WHEN imp THEN _source END AS _source)
FROM mapped;

CREATE TEMP TABLE _v4_annotation_tasks AS
SELECT t.* EXCLUDE (item_ids) REPLACE (
    CASE
        WHEN t.id = alignloop_content_id('annotation_task',
                                         json_object('kind', t.kind, 'round', t.round_id, 'items', t.item_ids))
            THEN alignloop_content_id('annotation_task',
                                      json_object('kind', t.kind, 'round', t.round_id, 'items', n.new_ids))
        ELSE t.id
    END AS id),
    n.new_ids AS item_ids, t.id AS _old_id
FROM annotation_tasks AS t
INNER JOIN _v4_lists AS n ON t.id = n.id AND n.table_name = 'annotation_tasks';

-- 3. Who brought what before v4: one import per source name (the file's name unless --source named it), from the
-- prompts' source, the imported responses' model and the labels on them.
CREATE TEMP TABLE _v4_carried AS
SELECT 'prompts' AS table_name, id AS old_id, id AS new_id, source, created_at FROM prompts
UNION ALL
SELECT 'responses', r.id, k.new_id, k.source, r.created_at
FROM responses AS r INNER JOIN _v4_responses AS k ON r.id = k.old_id AND k.imported
UNION ALL
SELECT 'comparisons', _old_id, id, _source, created_at FROM _v4_comparisons WHERE _source IS NOT NULL
UNION ALL
SELECT 'rankings', _old_id, id, _source, created_at FROM _v4_rankings WHERE _source IS NOT NULL
UNION ALL
SELECT 'ratings', _old_id, id, _source, created_at FROM _v4_ratings WHERE _source IS NOT NULL
UNION ALL
SELECT 'step_labels', _old_id, id, _source, created_at FROM _v4_step_labels WHERE _source IS NOT NULL
UNION ALL
SELECT 'corrections', _old_id, id, _source, created_at FROM _v4_corrections WHERE _source IS NOT NULL;

INSERT INTO imports (id, path, file_name, format, source, imported_at)
SELECT alignloop_content_id('import', json_object('source', c.source, 'recorded_by', 'schema_v4')), c.source,
    c.source, (SELECT min(k.format) FROM _v4_responses AS k WHERE k.source = c.source), c.source, min(c.created_at)
FROM _v4_carried AS c
GROUP BY c.source;

INSERT INTO import_rows (import_id, table_name, row_id, is_new)
SELECT alignloop_content_id('import', json_object('source', source, 'recorded_by', 'schema_v4')), table_name, new_id,
    row_number() OVER (PARTITION BY table_name, new_id ORDER BY created_at, old_id) = 1
FROM _v4_carried
QUALIFY row_number() OVER (PARTITION BY source, table_name, new_id ORDER BY created_at, old_id) = 1;

-- 4. Rewrite: each re-keyed row replaced by its new version, copies that became one row keeping the earliest.
CREATE TEMP TABLE _v4_responses_new AS
SELECT r.* REPLACE (coalesce(k.new_id, r.id) AS id, coalesce(p.new_id, r.parent_id) AS parent_id),
    r.id AS _old_id
FROM responses AS r
LEFT JOIN _v4_responses AS k ON r.id = k.old_id
LEFT JOIN _v4_responses AS p ON r.parent_id = p.old_id
WHERE k.old_id IS NOT NULL OR p.old_id IS NOT NULL;

DELETE FROM responses WHERE id IN (SELECT _old_id FROM _v4_responses_new);
INSERT INTO responses BY NAME
SELECT * EXCLUDE (_old_id) FROM _v4_responses_new
QUALIFY row_number() OVER (PARTITION BY id ORDER BY created_at, _old_id) = 1;
INSERT INTO id_rekeys (table_name, old_id, new_id, version)
SELECT 'responses', _old_id, id, 4 FROM _v4_responses_new WHERE _old_id <> id;

-- The feedback tables, one at a time.
-- include: _v4_rekeyed(table=comparisons)
-- include: _v4_rekeyed(table=rankings)
-- include: _v4_rekeyed(table=ratings)
-- include: _v4_rekeyed(table=step_labels)
-- include: _v4_rekeyed(table=corrections)

DELETE FROM annotation_tasks WHERE id IN (SELECT _old_id FROM _v4_annotation_tasks);
INSERT INTO annotation_tasks BY NAME
SELECT * EXCLUDE (_old_id) FROM _v4_annotation_tasks
QUALIFY row_number() OVER (PARTITION BY id ORDER BY created_at, _old_id) = 1;
INSERT INTO id_rekeys (table_name, old_id, new_id, version)
SELECT 'annotation_tasks', _old_id, id, 4 FROM _v4_annotation_tasks WHERE _old_id <> id;

UPDATE feedback_history AS h SET feedback_id = k.new_id
FROM id_rekeys AS k
WHERE k.version = 4 AND h.feedback_table = k.table_name AND h.feedback_id = k.old_id;

DROP TABLE _v4_responses;
DROP TABLE _v4_lists;
DROP TABLE _v4_responses_new;
DROP TABLE _v4_comparisons;
DROP TABLE _v4_rankings;
DROP TABLE _v4_ratings;
DROP TABLE _v4_step_labels;
DROP TABLE _v4_corrections;
DROP TABLE _v4_annotation_tasks;
DROP TABLE _v4_carried;
DROP MACRO _v4_labeller;
DROP MACRO _v4_new_id;
