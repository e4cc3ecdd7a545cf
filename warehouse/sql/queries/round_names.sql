-- Every round name in use.
SELECT id FROM rounds
