-- Record a round's progress, its configuration and lineage (NULL keeps what is stored).
UPDATE rounds
SET status = $status,
    config = coalesce($config::JSON, config),
    parent_round_id = coalesce($parent, parent_round_id),
    policy_model_id = coalesce($policy, policy_model_id),
    updated_at = current_timestamp
WHERE id = $round_id
