-- Rankings name what they ranked by, as comparisons do: 'overall' unless a file or judge says otherwise (e.g. a
-- listwise judge asked for harmlessness). Existing rows become 'overall'.
ALTER TABLE rankings ADD COLUMN aspect VARCHAR NOT NULL DEFAULT 'overall';
