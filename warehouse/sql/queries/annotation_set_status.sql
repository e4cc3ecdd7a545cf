-- Mark annotation tasks ($ids: VARCHAR[]) with $status (pushed | annotated | deleted).
UPDATE annotation_tasks
SET status = $status, updated_at = current_timestamp
WHERE list_contains($ids, id) AND status <> $status
