-- Decontamination: drop training rows whose prompt shares word n-grams ($ngram words, lower-cased,
-- role prefixes stripped) with any evaluation prompt in _eval_texts, when the shared fraction of the
-- prompt's distinct n-grams is > 0 and >= $threshold. A prompt shorter than $ngram words is one n-gram.
WITH train AS (
    SELECT DISTINCT
        prompt_id,
        prompt_text AS text
    FROM _in
    WHERE split = 'train'
),

train_tokens AS (
    SELECT
        prompt_id,
        list_filter(
            regexp_split_to_array(lower(regexp_replace(text, '(^|\n)(system|user|assistant): ', ' ', 'g')), '[^a-z0-9]+'),
            lambda t: t <> ''
        ) AS toks
    FROM train
),

eval_tokens AS (
    SELECT
        list_filter(
            regexp_split_to_array(lower(regexp_replace(text, '(^|\n)(system|user|assistant): ', ' ', 'g')), '[^a-z0-9]+'),
            lambda t: t <> ''
        ) AS toks
    FROM _eval_texts
),

train_grams AS (
    SELECT DISTINCT
        prompt_id,
        hash(unnest(
            CASE
                WHEN len(toks) < $ngram THEN [array_to_string(toks, ' ')]
                ELSE list_transform(range(1, len(toks) - $ngram + 2), lambda i: array_to_string(toks[i:i + $ngram - 1], ' '))
            END
        )) AS g
    FROM train_tokens
),

eval_grams AS (
    SELECT DISTINCT
        hash(unnest(
            CASE
                WHEN len(toks) < $ngram THEN [array_to_string(toks, ' ')]
                ELSE list_transform(range(1, len(toks) - $ngram + 2), lambda i: array_to_string(toks[i:i + $ngram - 1], ' '))
            END
        )) AS g
    FROM eval_tokens
),

overlap AS (
    SELECT
        t.prompt_id,
        count(*) AS total,
        count(e.g) AS shared
    FROM train_grams AS t
    LEFT JOIN eval_grams AS e ON t.g = e.g
    GROUP BY t.prompt_id
)

SELECT *
FROM _in
WHERE prompt_id NOT IN (
    SELECT prompt_id FROM overlap
    WHERE shared > 0 AND shared::DOUBLE / total >= $threshold
)
