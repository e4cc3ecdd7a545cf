-- Statistical rejection sampling (RSO, Liu et al. 2024): keep a rated response with probability
-- exp((score - the best score of its prompt) / $rso_beta): the kept responses follow the sampling policy tilted by
-- exp(score / beta), the optimal policy's form for that reward. The best response is always kept (probability 1).
-- The uniform draw is the first 32 bits of md5($rso_seed || ':' || response_id) over 2^32: same inputs, same rows.
SELECT *
FROM _in
QUALIFY
    ('0x' || left(md5($rso_seed::VARCHAR || ':' || response_id), 8))::UBIGINT / 4294967296.0
    < exp((score - max(score) OVER (PARTITION BY prompt_id)) / $rso_beta)
