-- Remove evaluations about to be recomputed (a report replaces its earlier values); $ids: VARCHAR[].
DELETE FROM evaluations WHERE list_contains($ids, id)
