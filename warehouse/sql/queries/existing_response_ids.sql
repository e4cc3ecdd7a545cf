-- Which of the given response ids are already stored (generation resumes by skipping them).
-- Parameters: $ids (VARCHAR[]).
SELECT id
FROM responses
WHERE id IN (SELECT unnest(CAST($ids AS VARCHAR [])))
