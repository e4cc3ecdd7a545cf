-- Length-bias control: keep pairs whose longer side is at most $max_ratio times the shorter (characters).
SELECT *
FROM _in
WHERE greatest(length(chosen), length(rejected)) <= $max_ratio * greatest(least(length(chosen), length(rejected)), 1)
