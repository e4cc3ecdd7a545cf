-- Annotation tasks already recorded among $ids (VARCHAR[]): pushing them again would duplicate work.
SELECT id FROM annotation_tasks WHERE list_contains($ids, id)
