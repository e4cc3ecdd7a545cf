-- Judge quality figures (consistency under swap, position and length bias, agreement with humans).
SELECT target AS judge, round_id, metric, value
FROM evaluations
WHERE kind = 'judge_quality'
ORDER BY target, metric
