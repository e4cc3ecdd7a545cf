-- Remove comparisons already copied to feedback_history by annotation_retire_pair_comparisons; $ids: VARCHAR[].
DELETE FROM comparisons WHERE list_contains($ids::VARCHAR [], id)
