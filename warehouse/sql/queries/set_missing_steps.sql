-- Give responses stored without steps the steps a step judge labelled ($_response_steps: id, steps). Responses that
-- already have steps keep them.
UPDATE responses
SET steps = s.steps
FROM _response_steps AS s
WHERE responses.id = s.id AND responses.steps IS NULL
