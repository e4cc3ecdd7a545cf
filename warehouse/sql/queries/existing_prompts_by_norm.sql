-- Prompts already stored whose normalised text matches one of the given keys.
SELECT norm_hash, id
FROM prompts
WHERE norm_hash IN (SELECT unnest($keys::VARCHAR[]))
