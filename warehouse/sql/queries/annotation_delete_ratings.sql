-- Remove ratings already copied to feedback_history by annotation_retire_pair_ratings; $ids: VARCHAR[].
DELETE FROM ratings WHERE list_contains($ids::VARCHAR [], id)
