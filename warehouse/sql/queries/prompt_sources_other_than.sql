-- Prompts per source, except one source (e.g. what is not the demo's), largest first.
SELECT source, count(*) AS n
FROM prompts
WHERE source <> $source
GROUP BY source
ORDER BY n DESC, source
