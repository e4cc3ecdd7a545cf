-- Statistical rejection sampling as RSO's Algorithm 1 (Liu et al. 2024): draw until $rso_samples responses of a
-- prompt are kept. Each pass goes over the responses not kept yet (in response id order) and keeps one with
-- probability exp((score - the best score among those left) / $rso_beta), stopping at $rso_samples; the best left
-- is always kept, so a prompt needs at most $rso_samples passes (or runs out of responses first).
-- Pass 1 draws as rso_accept.sql does (md5($rso_seed || ':' || response_id)); pass k > 1 draws from
-- md5($rso_seed || ':' || k || ':' || response_id). Same inputs, same rows.
WITH RECURSIVE draws(pass, prompt_id, response_id, score, kept) AS (
    SELECT 0, prompt_id, response_id, score, NULL::INTEGER
    FROM _in
    UNION ALL
    SELECT pass + 1, prompt_id, response_id, score,
           CASE WHEN kept IS NOT NULL THEN kept
                WHEN hit AND n_kept + sum(hit::INTEGER) OVER (PARTITION BY prompt_id ORDER BY response_id)
                    <= $rso_samples THEN pass + 1 END
    FROM (
        SELECT *,
               kept IS NULL
               AND ('0x' || left(md5($rso_seed::VARCHAR || ':'
                                     || CASE WHEN pass = 0 THEN '' ELSE (pass + 1)::VARCHAR || ':' END
                                     || response_id), 8))::UBIGINT / 4294967296.0
                   < exp((score - max(score) FILTER (WHERE kept IS NULL) OVER p) / $rso_beta) AS hit,
               count(kept) OVER p AS n_kept,
               count(*) FILTER (WHERE kept IS NULL) OVER p AS n_left
        FROM draws
        WINDOW p AS (PARTITION BY prompt_id)
    )
    WHERE n_kept < $rso_samples AND n_left > 0
)
SELECT *
FROM _in
WHERE response_id IN (SELECT response_id FROM draws
                      QUALIFY pass = max(pass) OVER (PARTITION BY prompt_id) AND kept IS NOT NULL)
