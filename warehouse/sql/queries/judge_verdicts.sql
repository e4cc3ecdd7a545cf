-- Verdicts AI judges read from their replies, per judge, aspect and template, whether each could be read and why
-- not, with their count. A comparison holds two verdicts (one per order shown), a ranking one per order shown, a
-- rating one, a step label one. Only judgments a judge here read count (their meta names the template): imported
-- verdicts were never replies. A verdict stored before reasons were kept reads 'unrecorded'.
-- $round_id: NULL for all rounds.
WITH verdicts AS (
    SELECT
        c.judge,
        c.aspect,
        c.source,
        c.round_id,
        c.meta,
        json_extract_string(c.meta, '$.pos_' || o.side) IS NULL AS invalid,
        json_extract_string(c.meta, '$.reason_' || o.side) AS reason
    FROM comparisons AS c
    CROSS JOIN (VALUES ('ab'), ('ba')) AS o (side)
    UNION ALL
    SELECT
        judge,
        aspect,
        source,
        round_id,
        meta,
        reason IS NOT NULL AS invalid,
        reason
    FROM (
        SELECT
            *,
            unnest(coalesce(
                CAST(json_extract(meta, '$.invalid_reasons') AS VARCHAR []),
                list_transform(
                    range(CAST(json_array_length(meta, '$.raw') AS BIGINT)),
                    lambda i: CASE
                        WHEN i >= CAST(json_extract(meta, '$.valid_permutations') AS BIGINT) THEN 'unrecorded'
                    END
                )
            )) AS reason
        FROM rankings
    )
    UNION ALL
    SELECT
        judge,
        aspect,
        source,
        round_id,
        meta,
        score IS NULL AS invalid,
        json_extract_string(meta, '$.invalid_reason') AS reason
    FROM ratings
    UNION ALL
    SELECT
        judge,
        'overall' AS aspect,
        source,
        round_id,
        meta,
        label IS NULL AS invalid,
        json_extract_string(meta, '$.invalid_reason') AS reason
    FROM step_labels
)

SELECT
    judge,
    aspect,
    json_extract_string(meta, '$.template') AS template,
    invalid,
    -- where in the reply does not group: "two verdicts: A (line 1) and B (line 3)" -> "two verdicts: A and B"
    CASE WHEN invalid THEN regexp_replace(coalesce(reason, 'unrecorded'), ' \(line [0-9]+\)', '', 'g') END AS reason,
    count(*) AS n
FROM verdicts
WHERE
    source = 'ai' AND json_extract_string(meta, '$.template') IS NOT NULL
    AND ($round_id IS NULL OR round_id = $round_id)
GROUP BY ALL
ORDER BY judge, aspect, template, invalid, n DESC, reason
