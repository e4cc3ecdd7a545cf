-- Prompts per split.
SELECT split, count(*) AS n FROM prompts GROUP BY split ORDER BY split
