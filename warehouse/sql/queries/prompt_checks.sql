-- What rule verifiers read of prompts (reference answer, tags, meta), for the prompts an online run answers.
-- $ids: the prompt ids (those not in the warehouse are simply absent).
SELECT p.id, p.reference, p.tags, CAST(p.meta AS VARCHAR) AS meta
FROM prompts AS p
INNER JOIN (SELECT DISTINCT unnest($ids) AS id) AS wanted ON p.id = wanted.id
ORDER BY p.id
