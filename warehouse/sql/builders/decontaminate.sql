-- Decontamination: drop training rows whose prompt shares word n-grams ($ngram words, lower-cased,
-- role prefixes stripped) with any evaluation prompt in _eval_texts, when the shared fraction of the
-- prompt's distinct n-grams is > 0 and >= $threshold. A prompt shorter than $ngram words is one n-gram.
-- Training and evaluation texts go through the same tokenizer and n-gram CTEs, told apart by is_eval.
WITH texts AS (
    SELECT DISTINCT
        false AS is_eval,
        prompt_id,
        prompt_text AS text
    FROM _in
    WHERE split = 'train'
    UNION ALL
    SELECT
        true AS is_eval,
        NULL AS prompt_id,
        text
    FROM _eval_texts
),

tokens AS (
    SELECT
        is_eval,
        prompt_id,
        list_filter(
            regexp_split_to_array(lower(regexp_replace(text, '(^|\n)(system|user|assistant): ', ' ', 'g')), '[^a-z0-9]+'),
            lambda t: t <> ''
        ) AS toks
    FROM texts
),

grams AS (
    SELECT DISTINCT
        is_eval,
        prompt_id,
        hash(unnest(
            CASE
                WHEN len(toks) < $ngram THEN [array_to_string(toks, ' ')]
                ELSE list_transform(range(1, len(toks) - $ngram + 2), lambda i: array_to_string(toks[i:i + $ngram - 1], ' '))
            END
        )) AS g
    FROM tokens
),

overlap AS (
    SELECT
        t.prompt_id,
        count(*) AS total,
        count(e.g) AS shared
    FROM grams AS t
    LEFT JOIN grams AS e ON e.is_eval AND t.g = e.g
    WHERE NOT t.is_eval
    GROUP BY t.prompt_id
)

SELECT *
FROM _in
WHERE prompt_id NOT IN (
    SELECT prompt_id FROM overlap
    WHERE shared > 0 AND shared::DOUBLE / total >= $threshold
)
