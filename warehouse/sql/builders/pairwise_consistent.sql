-- Keep verdicts that held under position swap (NULL: not a swapped judgment, e.g. a human label).
SELECT * FROM _in WHERE consistent IS NOT FALSE
