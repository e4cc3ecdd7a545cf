-- Responses of a round with their prompts, for pointwise, binary, step and correction judges and verifiers.
-- $round_id: the round; $origins: response origins to include (e.g. ['policy', 'import']).
SELECT
    r.id,
    r.prompt_id,
    p.text AS question,
    r.text,
    r.steps,
    p.reference,
    p.tags,
    CAST(p.meta AS VARCHAR) AS prompt_meta,
    CAST(p.messages AS VARCHAR) AS messages,
    -- stops mid-solution: cut at the token limit, or a branch of another (PRM800K's alternative steps)
    coalesce(r.finish_reason = 'length' OR json_extract(r.meta, '$.alternative_for_step') IS NOT NULL, false)
        AS partial
FROM responses AS r
INNER JOIN prompts AS p ON r.prompt_id = p.id
WHERE r.round_id = $round_id AND list_contains($origins, r.origin)
ORDER BY r.prompt_id, r.sample_index, r.id
