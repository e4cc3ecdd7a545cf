-- Grouped pairwise judgments: contradictory groups, and human groups with several votes (build notes).
SELECT
    count(*) FILTER (WHERE contradictory) AS contradictory,
    count(*) FILTER (WHERE source = 'human' AND n > 1) AS human_multi,
    count(*) FILTER (WHERE source = 'human' AND n > 1 AND contradictory) AS human_contradictory
FROM _in
