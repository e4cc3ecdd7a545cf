-- Human labels per Label Studio task (and per step for step labels), with the gold answer of the task if any.
-- $round_id: NULL for every round. Labels are strings so every kind can be compared as nominal data:
-- pairwise a | b | tie (unit: the aspect of an optional aspect question, '' for the overall one), binary
-- good | bad, ranking the ids best first joined by '>', step -1 | 0 | 1.
WITH human AS (
    SELECT
        'pairwise' AS kind,
        meta,
        CASE WHEN aspect = 'overall' THEN '' ELSE aspect END AS unit,
        judge,
        winner AS label
    FROM comparisons
    WHERE source = 'human' AND winner <> 'invalid'
    UNION ALL
    SELECT
        'binary' AS kind,
        meta,
        '' AS unit,
        judge,
        CASE WHEN score >= 0.5 THEN 'good' ELSE 'bad' END AS label
    FROM ratings
    WHERE source = 'human' AND aspect = 'thumbs' AND score IS NOT NULL
    UNION ALL
    SELECT
        'ranking' AS kind,
        meta,
        '' AS unit,
        judge,
        array_to_string(response_ids, '>') AS label
    FROM rankings
    WHERE source = 'human'
    UNION ALL
    SELECT
        'step' AS kind,
        meta,
        CAST(step_index AS VARCHAR) AS unit,
        judge,
        CAST(label AS VARCHAR) AS label
    FROM step_labels
    WHERE source = 'human' AND label IS NOT NULL
)

SELECT
    t.kind,
    t.round_id,
    t.project_id,
    t.task_id,
    h.unit,
    h.judge AS annotator,
    h.label,
    json_extract_string(t.payload, '$.meta.gold_answer') AS gold,
    CAST(json_extract(h.meta, '$.lead_time') AS DOUBLE) AS lead_time
FROM human AS h
INNER JOIN annotation_tasks AS t
    ON
        t.kind = h.kind
        AND t.project_id = CAST(json_extract(h.meta, '$.project_id') AS BIGINT)
        AND t.task_id = CAST(json_extract(h.meta, '$.task_id') AS BIGINT)
WHERE $round_id IS NULL OR t.round_id = $round_id
ORDER BY t.project_id, t.task_id, h.unit, h.judge
