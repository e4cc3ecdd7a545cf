-- Drop pairs whose chosen and rejected texts are identical (two samples can give the same text): no preference.
SELECT * FROM _in WHERE chosen <> rejected
