-- Remove step labels already copied to feedback_history by annotation_retire_step_labels; $ids: VARCHAR[].
DELETE FROM step_labels WHERE list_contains($ids::VARCHAR [], id)
