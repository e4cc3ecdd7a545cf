-- Which of the given judgment ids are stored already (any feedback table); $ids: VARCHAR[].
SELECT id FROM comparisons WHERE list_contains($ids, id)
UNION ALL
SELECT id FROM rankings WHERE list_contains($ids, id)
UNION ALL
SELECT id FROM ratings WHERE list_contains($ids, id)
UNION ALL
SELECT id FROM step_labels WHERE list_contains($ids, id)
UNION ALL
SELECT id FROM corrections WHERE list_contains($ids, id)
