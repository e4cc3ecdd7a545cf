-- At most $max_pairs_per_prompt pairs per prompt, picked by md5(chosen_id || ':' || rejected_id): deterministic
-- and independent of insertion order (iterative DPO keeps a few pairs per prompt, e.g. 2 of 4 samples' pairs).
SELECT *
FROM _in
QUALIFY
    row_number() OVER (PARTITION BY prompt_id ORDER BY md5(chosen_id || ':' || rejected_id), chosen_id, rejected_id)
    <= $max_pairs_per_prompt
