-- Which of $ids (VARCHAR[]) are responses in the warehouse, with their prompts.
SELECT id, prompt_id FROM responses WHERE list_contains($ids, id)
